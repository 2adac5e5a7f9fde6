"""remote: is the DVC remote's SSH server the one this machine knows? Checked before `make push` and `make pull`.

dvc-ssh checks no host key (sshfs hands asyncssh known_hosts=None, and DVC's config has no option
for it): `dvc push` and `dvc pull` talk to whatever server answers at the remote's address. So
OpenSSH's own client, which does check, logs in first to the default remote's host, as DVC would
(the remote's user and port), and opens the sftp subsystem DVC uses (it works on sftp-only
accounts too). A remote that is not ssh:// is not checked.

    python -m stages.remote check
"""

from __future__ import annotations

import os
import subprocess
import sys

from dvc.config import Config, ConfigError
from dvc.fs import get_cloud_fs

from mnistcnn import cli

SSH = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ForwardAgent=no",
       "-o", "ConnectTimeout=10", "-s"]
UNSAFE = "nothing was pushed or pulled"


class RemoteRefused(Exception):
    """Why DVC should not talk to the remote: not the server this machine knows, or it does not let it in."""


def refusal(said: str, host: str, port: int | None, login: str) -> str:
    """What OpenSSH's failure `said` means, and what to do, in one line."""
    lines = [line.strip() for line in said.splitlines() if line.strip()] or ["no output"]
    last = next((line for line in lines if "strict checking" in line), lines[-1]).removeprefix("ssh: ")
    scan = f"ssh-keyscan {f'-p {port} ' if port else ''}{host}"
    if "Host key verification failed" in said:
        admins = "its admin's (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the server)"
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" not in said:
            return (f"the DVC remote's SSH server at {host} is not one this machine knows (no host key for it in "
                    f"~/.ssh/known_hosts): compare its fingerprint ({scan} | ssh-keygen -lf -) with {admins}, then "
                    f"add it ({scan} >> ~/.ssh/known_hosts); {UNSAFE} (ssh: {last})")
        sent = next((line.rstrip(".") for line in lines if line.startswith("SHA256:")), "another")
        known = f"[{host}]:{port}" if port and port != 22 else host
        return (f"the DVC remote's SSH server at {host} is not the one this machine knows: its host key ({sent}) "
                f"differs from the one ~/.ssh/known_hosts holds for it (an impostor, or a reinstalled server): "
                f"compare it with {admins}, and only if they match replace the old one (ssh-keygen -R '{known}'; "
                f"{scan} >> ~/.ssh/known_hosts); {UNSAFE} (ssh: {last})")
    if "Permission denied" in said:
        return (f"the DVC remote's SSH server at {host} does not accept this machine's key for {login}: ask its admin "
                f"to add this machine's public key (~/.ssh/id_*.pub) to {login}'s authorized keys there; {UNSAFE} "
                f"(ssh: {last})")
    return (f"cannot log in to the DVC remote's SSH server at {host} as {login}: is it up, and does `dvc remote list` "
            f"name it right? {UNSAFE} (ssh: {last})")


def main() -> int:
    if sys.argv[1:] != ["check"]:
        raise RemoteRefused("usage: python -m stages.remote check")
    config = Config.from_cwd()
    name = config["core"].get("remote")
    if not config["remote"].get(name, {}).get("url", "").startswith("ssh://"):
        return 0  # nothing to check: DVC says itself when there is no remote
    _, remote, _ = get_cloud_fs(config, name=name)  # host, user and port as DVC resolves them
    host, port, user = remote["host"], remote.get("port"), remote.get("user") or remote.get("username")
    key = remote.get("keyfile")
    args = [*(["-p", str(port)] if port else []), *(["-l", user] if user else []),
            *(["-i", os.path.expanduser(key)] if key else []), "--", host, "sftp"]
    try:
        done = subprocess.run([*SSH, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise RemoteRefused(f"OpenSSH's client (ssh) is not installed: it checks the DVC remote's host key "
                            f"before DVC talks to it (apt-get install openssh-client); {UNSAFE}") from None
    except subprocess.TimeoutExpired:
        raise RemoteRefused(f"the DVC remote's SSH server at {host} did not answer in 60 s; {UNSAFE}") from None
    if done.returncode != 0:
        raise RemoteRefused(refusal(done.stderr, host, port, user or "your user"))
    print(f"remote: {name}'s SSH server at {host} is the one ~/.ssh/known_hosts knows, and lets this machine in")
    return 0


if __name__ == "__main__":
    cli.run(main, user_errors=(RemoteRefused, ConfigError))
