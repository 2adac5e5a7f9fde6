"""The team's DVC remote over SSH, between separate hosts (tests/hosts.py): Debian's OpenSSH server
on "store", key-only; alice reproduces and pushes, bob restores her model without training, and a
stranger whose key the store does not know is turned away without writing anything. dvc-ssh checks
no host key, so `make push` and `make pull` check it first (stages/remote.py): a host that does not
know the store's key, or meets an impostor at the store's name, is refused before it logs in.
Each host has its own /etc/passwd and /etc/hosts (OpenSSH finds ~/.ssh by the passwd entry, not $HOME),
and every command that touches the network runs on its host: 10.77.0.x exists only inside the hosts."""

import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_repo
from tests.hosts import Host, network

OUTPUTS = ("data/train.pt", "data/test.pt", "models/model.pt", "models/model.json", "metrics/test.json",
           "metrics/train_history.json")
TEAMMATES = ("alice", "bob", "stranger", "newcomer", "misled")  # the store authorizes all but the stranger's key
# Each host as its own machine: its own /etc/passwd (root's home) and /etc/hosts, in a mount namespace of the command's.
ON_HOST = 'mount --bind "$0" /etc/passwd && mount --bind "$1" /etc/hosts && shift && exec "$@"'
SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey {folder}/host_key
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowAgentForwarding no
AllowTcpForwarding no
X11Forwarding no
Subsystem sftp internal-sftp
LogLevel VERBOSE
# sshd checks every folder above AuthorizedKeysFile up to / when it lies outside the user's home
# (root's is /root), and refuses the key because /tmp is world-writable (mode 1777).
StrictModes no
"""


def keygen(host: Host, path: Path) -> str:
    """A new ed25519 key pair at `path`, made on `host`; its public key's line."""
    host.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}", "-f", str(path)])
    return Path(f"{path}.pub").read_text()


def start_sshd(store: Host, folder: Path) -> tuple[subprocess.Popen, list[str]]:
    """The store's OpenSSH server, its own host key in `folder`; its log lines, read as they come."""
    folder.mkdir()
    keygen(store, folder / "host_key")
    (folder / "authorized_keys").touch()
    (folder / "sshd_config").write_text(SSHD_CONFIG.format(address=store.address, folder=folder))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation folder
    sshd = store.popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(folder / "sshd_config")])
    log: list[str] = []
    listening = threading.Event()

    def read() -> None:  # an unread pipe would stall sshd
        for line in sshd.stdout:
            log.append(line)
            if line.startswith("Server listening"):
                listening.set()
        listening.set()

    threading.Thread(target=read, daemon=True).start()
    assert listening.wait(30) and sshd.poll() is None, f"sshd did not start:\n{''.join(log)}"
    return sshd, log


def machine(folder: Path, home: Path, store: str) -> tuple[str, str]:
    """A host's own /etc/passwd, root's home there `home`, and /etc/hosts, the store's name there at `store`."""
    folder.mkdir(parents=True)
    users = Path("/etc/passwd").read_text().splitlines()
    root = next(i for i, user in enumerate(users) if user.startswith("root:"))
    fields = users[root].split(":")  # name:password:uid:gid:gecos:home:shell
    users[root] = ":".join([*fields[:5], str(home), *fields[6:]])
    (folder / "passwd").write_text("\n".join(users) + "\n")
    (folder / "hosts").write_text(f"127.0.0.1 localhost\n{store} store\n")
    return str(folder / "passwd"), str(folder / "hosts")


def make_recipe(target: str) -> str:
    """The command the Makefile runs for `target` (its one recipe line; the `install` it depends on aside)."""
    return re.search(rf"^{target}: install\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)


def logged(log: list[str], pattern: str, timeout: float = 10, since: int = 0) -> bool:
    """Whether an sshd's `log` has a line matching `pattern` (from line `since` on) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not any(re.search(pattern, line) for line in log[since:]):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class Team:
    hosts: dict[str, Host]
    homes: dict[str, Path]  # each teammate's home: .ssh/id_ed25519 and .ssh/known_hosts
    base_env: dict[str, str]
    tmp: Path
    alice: Path  # her repository, committed and pushed
    remote: Path  # the remote's folder on the store
    sshd_log: list[str]
    impostor_log: list[str]  # the impostor's sshd: another host key, the same authorized keys
    machines: dict[str, tuple[str, str]]  # each teammate host's /etc/passwd and /etc/hosts
    pushed: dict[str, bytes] | None = None  # main's outputs as alice pushed them

    def attempt(self, name: str, *args: str, cwd: Path, **env: str) -> tuple[int, str]:
        """`args` on host `name` as its root, with its home (and `env`), no terminal to prompt on: exit status,
        output."""
        on_host = ["unshare", "--mount", "sh", "-c", ON_HOST, *self.machines[name]]
        env = {**self.base_env, "HOME": str(self.homes[name]), **env}
        result = self.hosts[name].run([*on_host, *args], cwd=cwd, env=env, check=False, timeout=300,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        return result.returncode, result.stdout + result.stderr

    def make(self, name: str, target: str, cwd: Path, **env: str) -> tuple[int, str]:
        """`make target` on host `name`: its recipe, as the Makefile has it (the check, then DVC's command)."""
        return self.attempt(name, "sh", "-c", make_recipe(target), cwd=cwd, **env)

    def on(self, name: str, *args: str, cwd: Path, **env: str) -> str:
        """`args` on host `name`; fails the test with the output unless it exits 0."""
        code, out = self.attempt(name, *args, cwd=cwd, **env)
        assert code == 0, f"on {name}: {args} exited {code}:\n{out}"
        return out

    def clone(self, name: str, folder: str) -> Path:
        self.on(name, "git", "clone", "-q", str(self.alice), str(self.tmp / folder), cwd=self.tmp)
        return self.tmp / folder

    def logged(self, pattern: str, timeout: float = 10, since: int = 0) -> bool:
        """Whether the store's sshd logs a line matching `pattern` (from line `since` on) within `timeout` seconds."""
        return logged(self.sshd_log, pattern, timeout, since)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The store's sshd, knowing every teammate's key but the stranger's; an impostor's sshd with its own
    host key and the same authorized keys. Each teammate host with its own key and, but the newcomer's, the
    store's host key in known_hosts (verified beforehand); the misled host's /etc/hosts sends the store's name
    to the impostor. Alice's repository reproduced, committed with the SSH remote as its default, and pushed
    with its run-cache (`make push`)."""
    tmp = tmp_path_factory.mktemp("ssh")
    with network("store", *TEAMMATES, "impostor") as hosts:
        store, impostor = hosts["store"], hosts["impostor"]
        sshd, log = start_sshd(store, tmp / "sshd")
        host_key = (tmp / "sshd/host_key.pub").read_text()
        homes, machines = {}, {}
        for name in TEAMMATES:
            homes[name] = tmp / "home" / name
            (homes[name] / ".ssh").mkdir(parents=True, mode=0o700)
            public = keygen(hosts[name], homes[name] / ".ssh/id_ed25519")
            if name != "newcomer":
                (homes[name] / ".ssh/known_hosts").write_text(f"store {host_key}")
            if name != "stranger":
                with open(tmp / "sshd/authorized_keys", "a") as keys:
                    keys.write(public)
            machines[name] = machine(tmp / "etc" / name, homes[name],
                                     impostor.address if name == "misled" else store.address)
        fake, fake_log = start_sshd(impostor, tmp / "impostor")
        (tmp / "impostor/authorized_keys").write_text((tmp / "sshd/authorized_keys").read_text())
        repo, env = make_repo(tmp / "alice")
        env.pop("SSH_AUTH_SOCK", None)  # no agent: each host logs in with its own key file
        team = Team(hosts, homes, env, tmp, repo, tmp / "store/dvc", log, fake_log, machines)
        team.on("alice", "dvc", "remote", "add", "--default", "team", f"ssh://root@store{team.remote}", cwd=repo)
        team.on("alice", "dvc", "repro", cwd=repo)
        team.on("alice", "git", "add", "-A", cwd=repo)
        team.on("alice", "git", "-c", "user.name=alice", "-c", "user.email=a@t", "commit", "-qm", "reproduced", cwd=repo)
        code, out = team.make("alice", "push", cwd=repo)
        assert code == 0 and "remote: team's SSH server at store is the one ~/.ssh/known_hosts knows" in out, out
        team.pushed = {path: (repo / path).read_bytes() for path in OUTPUTS}
        yield team
    sshd.wait(10)
    fake.wait(10)


def test_a_teammate_on_another_host_restores_the_model_from_the_ssh_remote_without_training(team):
    b = team.clone("bob", "bob")
    code, out = team.make("bob", "pull", cwd=b, MNIST_MIRROR="/nonexistent")
    assert code == 0 and "remote: team's SSH server at store is the one ~/.ssh/known_hosts knows" in out, out
    out = team.on("bob", "dvc", "repro", cwd=b, MNIST_MIRROR="/nonexistent")  # a download would fail
    assert "Running stage" not in out, out
    assert not (b / "mlruns/mlflow.db").exists()  # no stage ran
    assert {path: (b / path).read_bytes() for path in OUTPUTS} == team.pushed
    assert team.on("bob", "git", "status", "--porcelain", cwd=b) == ""
    assert team.logged(rf"Accepted publickey for root from {team.hosts['bob'].address} ")  # with bob's key


def test_repro_pull_restores_a_stage_run_pushed_from_an_experiment(team):
    """B sets a param to a value A pushed a run of: `dvc repro --pull` fetches A's model, trains nothing."""
    a = team.alice
    team.on("alice", "dvc", "exp", "run", "-S", "train.seed=5", cwd=a)  # a run of seed 5 in A's run-cache
    assert team.make("alice", "push", cwd=a)[0] == 0
    b = team.clone("bob", "bob-seed5")
    params = (b / "params.yaml").read_text().replace("\n  seed: 0\n", "\n  seed: 5\n")  # train.seed, not validation's
    (b / "params.yaml").write_text(params)
    out = team.on("bob", "dvc", "repro", "--pull", cwd=b, MNIST_MIRROR="/nonexistent")
    assert "Stage 'train' is cached - skipping run" in out and "Running stage 'train'" not in out, out
    assert (b / "models/model.pt").read_bytes() == (a / "models/model.pt").read_bytes() != team.pushed["models/model.pt"]
    assert (b / "metrics/test.json").read_bytes() == (a / "metrics/test.json").read_bytes()


def remote_files(remote: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(remote)): (p.stat().st_size, p.stat().st_mtime_ns) for p in remote.rglob("*")}


def test_a_stranger_without_an_authorized_key_can_neither_pull_nor_push(team):
    """`make pull` stops at the check; DVC itself, run directly, is refused too, and writes nothing."""
    s = team.clone("stranger", "stranger")
    before = remote_files(team.remote)
    code, out = team.make("stranger", "pull", cwd=s)
    assert code != 0 and out.splitlines() == [
        "error: the DVC remote's SSH server at store does not accept this machine's key for root: ask its admin to add "
        "this machine's public key (~/.ssh/id_*.pub) to root's authorized keys there; nothing was pushed or pulled "
        "(ssh: root@store: Permission denied (publickey).)"], out
    pulled = team.attempt("stranger", "dvc", "pull", cwd=s)
    (s / "notes.txt").write_text("the stranger's\n")
    team.on("stranger", "dvc", "add", "notes.txt", cwd=s)
    pushed = team.attempt("stranger", "dvc", "push", cwd=s)
    refusal = "Permission denied for user root on host store"  # asyncssh's, through DVC
    assert pulled[0] != 0 and f"ERROR: failed to connect to ssh ({team.remote}/files/md5) - {refusal}" in pulled[1], \
        pulled
    assert pushed[0] != 0 and f"ERROR: unexpected error - {refusal}" in pushed[1], pushed
    assert not (s / "models/model.pt").exists()
    assert remote_files(team.remote) == before
    stranger = team.hosts["stranger"]
    fingerprint = stranger.run(["ssh-keygen", "-lf", str(team.homes["stranger"] / ".ssh/id_ed25519.pub")]).stdout
    assert team.logged(rf"Failed publickey for root from {stranger.address} port \d+ ssh2: "
                       rf"ED25519 {re.escape(fingerprint.split()[1])}$")  # its key offered, and refused
    assert not team.logged(rf"Accepted publickey for root from {stranger.address} ", timeout=0)


@pytest.mark.parametrize("name", ["newcomer", "misled"])
def test_make_pull_and_push_refuse_a_store_whose_host_key_this_host_does_not_know(team, name):
    """Both hosts' keys are authorized, so only the host key can stop them: the newcomer has none for the
    store in known_hosts; the misled host has the store's, but its /etc/hosts sends the store's name to an
    impostor with another key (as a poisoned DNS would). The check refuses before logging in: no output
    fetched, nothing written to the remote, and the server it met logs no login."""
    host, log = team.hosts[name], team.impostor_log if name == "misled" else team.sshd_log
    since, before = len(log), remote_files(team.remote)
    c = team.clone(name, name)
    pulled = team.make(name, "pull", cwd=c)
    assert not (c / "models/model.pt").exists() and not (c / ".dvc/cache/files").exists()  # nothing fetched
    (c / "notes.txt").write_text(f"the {name}'s\n")
    team.on(name, "dvc", "add", "notes.txt", cwd=c)
    pushed = team.make(name, "push", cwd=c)
    scan = "ssh-keyscan store"
    if name == "newcomer":
        expected = ("error: the DVC remote's SSH server at store is not one this machine knows (no host key for it in "
                    f"~/.ssh/known_hosts): compare its fingerprint ({scan} | ssh-keygen -lf -) with its admin's "
                    "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the server), then add it "
                    f"({scan} >> ~/.ssh/known_hosts); nothing was pushed or pulled "
                    "(ssh: No ED25519 host key is known for store and you have requested strict checking.)")
    else:
        sent = host.run(["ssh-keygen", "-lf", str(team.tmp / "impostor/host_key.pub")]).stdout.split()[1]
        expected = (f"error: the DVC remote's SSH server at store is not the one this machine knows: its host key "
                    f"({sent}) differs from the one ~/.ssh/known_hosts holds for it (an impostor, or a reinstalled "
                    "server): compare it with its admin's (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the "
                    f"server), and only if they match replace the old one (ssh-keygen -R 'store'; {scan} >> "
                    "~/.ssh/known_hosts); nothing was pushed or pulled "
                    "(ssh: Host key for store has changed and you have requested strict checking.)")
    for code, out in (pulled, pushed):
        assert code != 0 and out.splitlines() == [expected], out
    assert remote_files(team.remote) == before
    assert logged(log, rf"Connection closed by {host.address} port \d+ \[preauth\]", since=since)  # it was met
    assert not logged(log, rf"Accepted publickey for root from {host.address} ", timeout=0, since=since)


def test_dvc_itself_checks_no_host_key(team):
    """The gap the check exists for: dvc-ssh 4.3.0 checks no host key (sshfs hands asyncssh known_hosts=None,
    and DVC's ssh remote config has no option to change it), so `dvc pull` run directly logs in to whatever
    server answers at the remote's name, from a host that has no key for it; that is why `make pull` and
    `make push` run `python -m stages.remote check` first. When this test starts failing, dvc-ssh has learned
    to check host keys, and the check can be reconsidered."""
    newcomer = team.hosts["newcomer"]
    since = len(team.sshd_log)
    n = team.clone("newcomer", "newcomer-direct")
    team.on("newcomer", "dvc", "pull", cwd=n)  # no known_hosts for the store at all
    assert team.logged(rf"Accepted publickey for root from {newcomer.address} ", since=since)
    assert (n / "models/model.pt").read_bytes() == team.pushed["models/model.pt"]
