"""``python -m data_stubs make DIR [--mock] [--seed S] [--n-persons N] ... [--force]``."""

import argparse
import sys
import time

from data_stubs.make import StubConfig, StubError, make_stub


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_stubs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="write a stub competition input folder")
    make.add_argument("dir", help="folder to create (must not exist, or be empty, or --force)")
    make.add_argument("--mock", action="store_true",
                      help="write the public copy instead: only empty.txt")
    make.add_argument("--force", action="store_true", help="replace an existing folder")
    defaults = StubConfig()
    make.add_argument("--seed", type=int, default=defaults.seed)
    make.add_argument("--n-persons", type=int, default=defaults.n_persons,
                      help="persons in retain + forget")
    make.add_argument("--n-forget-persons", type=int, default=defaults.n_forget_persons)
    make.add_argument("--n-val-persons", type=int, default=defaults.n_val_persons)
    make.add_argument("--images-per-person", type=int, default=defaults.images_per_person)
    make.add_argument("--epochs", type=int, default=defaults.epochs,
                      help="training epochs of original_model.pth")
    args = parser.parse_args(argv)
    config = StubConfig(
        seed=args.seed, n_persons=args.n_persons, n_forget_persons=args.n_forget_persons,
        n_val_persons=args.n_val_persons, images_per_person=args.images_per_person,
        epochs=args.epochs,
    )
    start = time.perf_counter()
    try:
        out = make_stub(args.dir, config, mock=args.mock, force=args.force)
    except StubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. the disk filled up while writing (nothing is left behind)
        print(f"error: cannot write {args.dir}: {err.strerror or err}", file=sys.stderr)
        return 2
    kind = "mock stub" if args.mock else "stub"
    print(f"wrote {kind} {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
