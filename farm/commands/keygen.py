"""`farm keygen`: create the Ed25519 key pair that signs certificates."""

from __future__ import annotations

import argparse
from pathlib import Path

from farm.errors import FarmError
from farm.trust.signing import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, generate_keypair


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keygen",
        description=f"Create an Ed25519 key pair for signing certificates: DIR/{PRIVATE_KEY_NAME} "
                    f"(PKCS#8 PEM, unencrypted, mode 0600: keep it secret) and "
                    f"DIR/{PUBLIC_KEY_NAME} (PEM, give it to whoever checks certificates). "
                    "Prints the keyid (SHA-256 of the raw public key) that signed envelopes carry.",
    )
    parser.add_argument("--out-dir", required=True, type=Path, metavar="DIR",
                        help="folder for the two key files (created if missing)")
    parser.add_argument("--force", action="store_true",
                        help="replace existing key files (certificates signed by the old key "
                             "will no longer verify against the new public key)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out_dir: Path = args.out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FarmError(f"cannot create --out-dir {out_dir}: {err.strerror or err}") from err
    private_path, public_path = out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME
    key_id = generate_keypair(private_path, public_path, overwrite=args.force)
    print(f"private key: {private_path}\npublic key:  {public_path}\nkeyid:       {key_id}")
    return 0
