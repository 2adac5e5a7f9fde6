"""Build the page DVC draws its plots on, with vega, vega-lite and vega-embed inlined.

Then dvc_plots/index.html draws with no network, wherever it is copied or opened.

DVC's own page loads the three from a CDN (dvc_render's VegaRenderer.SCRIPTS): offline it stays
blank. This fetches the versions pinned below from the npm registry, checks each tarball against
the sha512 the registry published for it (npm's `integrity`), and writes plots/template.html with
the libraries' minified builds in place of its `<!-- libraries -->` line. `.dvc/config` names the
result as DVC's plots.html_template; `make plots-lib` runs this:

    python -m plots.offline .dvc/plots_template.html

Only the standard library, so it runs before the venv exists. $NPM_CONFIG_REGISTRY (npm's own
setting) points it at a registry mirror.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).with_name("template.html")
MARKER = "<!-- libraries -->"
# dvc_render replaces these wherever they appear in the page (str.replace, not str.format): braces in
# the inlined code are safe, these three words in braces would not be. The page must hold the second.
DVC_PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")
REGISTRY = "https://registry.npmjs.org"
MAX_TARBALL_BYTES = 32 << 20  # vega's is 3.9 MB


@dataclass(frozen=True)
class Library:
    name: str
    version: str
    integrity: str  # the registry's dist.integrity: "sha512-" and the tarball's SHA-512 in base64
    build: str  # the browser bundle in the tarball, the file jsdelivr serves for the package


# The major versions dvc_render 1.0 loads from the CDN (vega 5, vega-lite 5, vega-embed 6, whose
# DVC templates are vega-lite v5 specs), at their last releases; in loading order.
LIBRARIES = (
    Library("vega", "5.33.1",
            "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
            "package/build/vega.min.js"),
    Library("vega-lite", "5.23.0",
            "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
            "package/build/vega-lite.min.js"),
    Library("vega-embed", "6.29.0",
            "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
            "package/build/vega-embed.min.js"),
)


class PageError(RuntimeError):
    """A library could not be fetched, did not match its pin, or cannot be inlined."""


def tarball_url(registry: str, library: Library) -> str:
    return f"{registry.rstrip('/')}/{library.name}/-/{library.name}-{library.version}.tgz"


def integrity(data: bytes) -> str:
    """The npm `integrity` string of `data`."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(url: str, timeout: float = 60) -> bytes:
    """The bytes at `url`, at most MAX_TARBALL_BYTES of them."""
    request = urllib.request.Request(url, headers={"User-Agent": "mnist-compact-cnn"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_TARBALL_BYTES + 1)
    except (urllib.error.URLError, OSError) as err:
        raise PageError(f"could not fetch {url}: {getattr(err, 'reason', err)}") from err
    if len(data) > MAX_TARBALL_BYTES:
        raise PageError(f"{url} is larger than {MAX_TARBALL_BYTES:,} bytes: refused")
    return data


def bundle(library: Library, tarball: bytes, url: str) -> str:
    """The library's browser bundle out of its tarball, once the tarball matches its pin."""
    if (found := integrity(tarball)) != library.integrity:
        raise PageError(f"{url} is not the pinned {library.name} {library.version}: "
                        f"its integrity is {found}, the pin says {library.integrity}")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        try:
            code = archive.extractfile(library.build).read().decode("utf-8")
        except (KeyError, AttributeError) as err:  # no such member; not a file
            raise PageError(f"{url} holds no file {library.build}") from err
    # Inside <script>, "</script" would end the element early and "<!--" can change how the
    # parser looks for the end; DVC's placeholders would be replaced in the code.
    for hazard in ("</script", "<!--", *DVC_PLACEHOLDERS):
        if hazard in code.lower():
            raise PageError(f"{library.name} {library.version}'s {library.build} holds {hazard!r}: "
                            "it cannot be inlined as it is")
    return code


def page(template: str, bundles: dict[Library, str]) -> str:
    """`template` with a <script> for each bundle, in order, in place of its MARKER line."""
    if template.count(MARKER) != 1 or template.count("{plot_divs}") != 1:
        raise PageError(f"{TEMPLATE} must hold {MARKER!r} and '{{plot_divs}}' once each")
    scripts = "\n".join(f"<script>/* {library.name} {library.version} */\n{code}\n</script>"
                        for library, code in bundles.items())
    return template.replace(MARKER, scripts)


def build(out: Path, registry: str) -> None:
    """Fetch, check and inline the pinned libraries into `out`, replaced whole or not at all."""
    bundles = {}
    for library in LIBRARIES:
        url = tarball_url(registry, library)
        bundles[library] = bundle(library, fetch(url), url)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(page(TEMPLATE.read_text(encoding="utf-8"), bundles), encoding="utf-8")
    os.replace(partial, out)  # make would take a half-written page for a finished one


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the page to write (.dvc/config's plots.html_template)")
    args = parser.parse_args(argv)
    registry = os.environ.get("NPM_CONFIG_REGISTRY") or REGISTRY
    try:
        build(args.out, registry)
    except PageError as err:
        sys.exit(f"plots.offline: {err}")
    versions = ", ".join(f"{library.name} {library.version}" for library in LIBRARIES)
    print(f"plots.offline: wrote {args.out} ({versions} inlined)")


if __name__ == "__main__":
    main()
