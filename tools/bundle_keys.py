"""Ed25519 keys for signed bundles: make a key pair, sign a bundle, verify one.

Needs ``cryptography`` (``pip install 'edgecl[sign]'``). Keys are PEM files,
the format OpenSSL writes (see :mod:`edgecl.runtime.signing`).

Usage::

    python tools/bundle_keys.py keygen --out keys/bundle       # keys/bundle.key (0600), .pub
    python tools/bundle_keys.py sign BUNDLE --key keys/bundle.key      # writes BUNDLE/manifest.sig
    python tools/bundle_keys.py verify BUNDLE --pubkey keys/bundle.pub # exit 0 if it verifies

``edgecl export --sign-key keys/bundle.key`` signs at export; ``sign`` is for
bundles that already exist (the shipped default one, say). Keep the ``.key``
file on the build host only; copy the ``.pub`` file to the devices and name it
in the device profile (``bundle_public_key``) or in ``EDGECL_BUNDLE_PUBKEY``.
"""

from __future__ import annotations

import argparse
import sys

from edgecl.errors import EdgeclError
from edgecl.runtime.bundle import Bundle
from edgecl.runtime.signing import fingerprint, load_public_key, sign_bundle, write_keypair


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="write OUT.key (private, 0600) and OUT.pub (public)")
    k.add_argument("--out", required=True, metavar="OUT", help="path stem, e.g. keys/bundle")
    s = sub.add_parser("sign", help="write BUNDLE/manifest.sig with a private key")
    s.add_argument("bundle", metavar="BUNDLE")
    s.add_argument("--key", required=True, metavar="KEY", help="private key (PEM)")
    v = sub.add_parser("verify", help="load BUNDLE, requiring a signature by this public key")
    v.add_argument("bundle", metavar="BUNDLE")
    v.add_argument("--pubkey", required=True, metavar="PUB", help="public key (PEM)")
    args = p.parse_args(argv)
    try:
        if args.command == "keygen":
            priv, pub = write_keypair(args.out)
            print(f"wrote {priv} (private: keep it off the devices) and {pub}")
            print(f"public key fingerprint {fingerprint(load_public_key(pub))}")
        elif args.command == "sign":
            b = sign_bundle(args.bundle, args.key)
            print(f"signed {b.path}/manifest.sig (public key {b.signed_by})")
        else:
            b = Bundle.load(args.bundle, public_key=args.pubkey)
            print(f"{b.path}: signature OK (public key {b.signed_by}), every sha256 matches")
    except EdgeclError as exc:
        print(f"bundle_keys: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
