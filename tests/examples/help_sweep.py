#!/usr/bin/env python3
"""Every program built from examples/ and bench/ answers --help and refuses
an unknown flag. Finds the programs in meson's introspection file, so a new
program is checked without being listed here.

  help_sweep.py BUILD_DIR SOURCE_DIR

Per program: `--help` exits 0 with the usage on stdout, with no printf
directive left in it (a usage string printed with fputs showed "%%");
`--no-such-flag`
exits 2 at once (nothing on stdout: no work started) with exactly one line on
stderr that starts with "<program>: "; an example's `--help` after a bad
value still shows the usage."""
import json
import os
import re
import subprocess
import sys

FOLDERS = ("examples", "bench")


def programs(build, source):
    with open(os.path.join(build, "meson-info", "intro-targets.json")) as f:
        targets = json.load(f)
    for t in targets:
        rel = os.path.relpath(os.path.dirname(t["defined_in"]), source)
        if t["type"] == "executable" and rel in FOLDERS:
            yield t["name"], t["filename"][0], rel


def run(path, *flags):
    # 60 s: generous under valgrind-free CI load; a flag that started the
    # real work would take minutes.
    return subprocess.run([path, *flags], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60,
                          stdin=subprocess.DEVNULL)


def check(name, path, folder):
    errors = []
    if not os.access(path, os.X_OK):
        return ["%s: not built (%s)" % (name, path)]
    r = run(path, "--help")
    out = r.stdout.decode(errors="replace")
    if r.returncode != 0:
        errors.append("%s --help exited %d" % (name, r.returncode))
    if "usage" not in out.lower():
        errors.append("%s --help printed no usage on stdout" % name)
    left = re.findall(r"%%|%[-+ 0#]*[0-9.]*(?:l|z|ll)?[sdifgeuxc]\b", out)
    if left:
        errors.append("%s --help shows printf directives %r" % (name, left[:3]))
    r = run(path, "--no-such-flag")
    err = r.stderr.decode(errors="replace").splitlines()
    if r.returncode != 2:
        errors.append("%s --no-such-flag exited %d, expected 2"
                      % (name, r.returncode))
    if r.stdout:
        errors.append("%s --no-such-flag wrote to stdout (did it run?): %r"
                      % (name, r.stdout[:200]))
    if len(err) != 1 or not err[0].startswith(name + ": "):
        errors.append("%s --no-such-flag: want one line '%s: ...' on stderr, "
                      "got %r" % (name, name, err[:5]))
    # the examples' --help wins over a bad value before it (it gave the
    # value's error); an unknown flag before it still stops at once
    if folder == "examples":
        r = run(path, "--threads", "-5", "--help")
        if r.returncode != 0 or b"usage" not in r.stdout.lower():
            errors.append("%s --threads -5 --help exited %d without the "
                          "usage" % (name, r.returncode))
        r = run(path, "-batch", "64")
        if r.returncode != 2 or r.stdout:
            errors.append("%s -batch 64 exited %d (a bundle holding h is "
                          "not --help)" % (name, r.returncode))
    return errors


def main():
    found = list(programs(sys.argv[1], sys.argv[2]))
    failures = []
    for name, path, folder in found:
        errs = check(name, path, folder)
        print("%-12s %s" % (name, "ok" if not errs else "FAIL"))
        failures += errs
    # bench/compare_pytorch.sh, a benchmark script, answers --help too (it
    # took the flag for its build folder and ran on without a word)
    script = os.path.join(sys.argv[2], "bench", "compare_pytorch.sh")
    errs = check("compare_pytorch.sh", script, "bench")
    print("%-12s %s" % ("compare_pytorch.sh", "ok" if not errs else "FAIL"))
    failures += errs
    for f in failures:
        print("FAIL: " + f)
    if len(found) < 4:
        print("FAIL: only %d programs found in examples/ and bench/"
              % len(found))
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
