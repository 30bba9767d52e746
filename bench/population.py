"""population: `trialscreen screen` over ../shared/synthea (30 Synthea records) and over fixtures/, in one process.

Baseline: reading every file of the same set and ``json.loads`` of its text, in the same process.
Target (issue 15): screening Synthea costs at most 2x the baseline (the fixtures, 46 small records
of which nearly every resource is read, are shown for information).

The command is run through its entry point (``cds_service.cli.main``: loads the code tables and rules, reads,
screens, writes JSON lines) with its output sent to /dev/null. Synthea is skipped when the folder is absent.

    python bench/population.py [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os

from _common import AT_ISO, FIXTURES, SYNTHEA, interleaved_medians, machine, ms, ratios_line, table

TARGET = {"synthea": 2.0}  # issue 15


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    from cds_service.cli import main as trialscreen
    from cds_service.gather.bundles import expand_paths

    sets = [("fixtures", FIXTURES)]
    if SYNTHEA.is_dir():
        sets.insert(0, ("synthea", SYNTHEA))
    else:
        print(f"population: {SYNTHEA} is absent: Synthea skipped")
    rows, ratios = [], {}
    for name, folder in sets:
        files = expand_paths([folder])
        size = sum(f.stat().st_size for f in files)

        def baseline(files=files) -> None:
            for f in files:
                text = f.read_text(encoding="utf-8")
                if f.suffix.lower() == ".ndjson":
                    for line in text.splitlines():
                        if line.strip():
                            json.loads(line)
                else:
                    json.loads(text)

        def screen(folder=folder) -> None:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                status = trialscreen(["screen", "--format", "json", "--at", AT_ISO, str(folder)])
            assert status == 0, f"trialscreen screen exited {status}"

        t = interleaved_medians({"baseline": baseline, "screen": screen}, repeat=args.repeat, warmup=1)
        ratios[name] = ratio = t["screen"] / t["baseline"]
        rows.append([name, len(files), f"{size / 1e6:.1f}", ms(t["baseline"]), ms(t["screen"]), f"{ratio:.2f}x",
                     args.repeat])
    print(f"population: trialscreen screen vs read + json.loads of the same files ({machine()})\n")
    print(table(["set", "files", "MB", "read+json.loads ms", "trialscreen screen ms", "ratio", "runs"], rows))
    print()
    print(ratios_line("population", ratios, TARGET))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
