"""``python -m embtable <command>``: bench (the benchmark grid) or demo."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# Each subcommand is a module with `main(argv) -> int`, imported only when used.
COMMANDS = {
    "bench": ("embtable._bench", "time gather / scatter_add against NumPy and peers"),
    "demo": ("embtable._demo", "train a small model end to end"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        lines = ["usage: python -m embtable <command> [options]", "", "commands:"]
        lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
        stream = sys.stdout if args and args[0] in ("-h", "--help") else sys.stderr
        print("\n".join(lines), file=stream)
        if args and args[0] not in ("-h", "--help"):
            print(f"\nunknown command {args[0]!r}", file=stream)
        return 0 if args and args[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
