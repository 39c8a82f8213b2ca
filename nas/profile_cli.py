"""Placeholder so the console script resolves; replaced by its real implementation."""
import sys


def main() -> int:
    print("not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
