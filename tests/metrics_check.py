#!/usr/bin/env python3
"""metrics_check.py -- a strict checker of /.metrics (no packages needed).

    metrics_check.py FILE     exit 0 if FILE is good, else 1 and one line
                              per problem on stdout

Checks the Prometheus text format (version 0.0.4) line by line: every
line a HELP, a TYPE, a sample, or "# EOF" last; metric and label names by
the format's grammar; label values quoted with only \\\\, \\" and \\n
escaped; no label twice in a sample; values Go's float syntax; HELP and
TYPE at most once per family and before its samples; a family's samples
together.  On top of that, the naming rules OpenMetrics parsers enforce:
every sample belongs to a TYPE'd family by that type's suffixes (a
counter "foo" has only "foo_total" and "foo_created", a histogram
"_bucket", "_sum", "_count", "_created"), so a counter's samples end in
_total; no two families claim one name (a family named "foo_total" beside
a counter "foo" is the clash OpenMetrics parsers reject); no series twice;
a histogram's buckets cumulative with le ascending, a +Inf bucket equal to
_count; counters and bucket counts not negative.  A family whose unit is
bytes, seconds or a ratio says so at the end of its name, in base units.
"""
import math
import re
import sys

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
VALUE = re.compile(r"[+-]?(Inf|NaN|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)\Z")
SUFFIXES = {
    "counter": ["_total", "_created"],
    "gauge": [""],
    "histogram": ["_bucket", "_sum", "_count", "_created"],
    "summary": ["", "_sum", "_count", "_created"],
    "untyped": [""],
}
BASE_UNITS = ("bytes", "seconds", "ratio")
OTHER_UNITS = {"ms", "us", "ns", "milliseconds", "microseconds", "kb", "mb", "kib", "mib"}


def parse_labels(text, where, problems):
    """'a="x",b="y"' -> [(a, x), (b, y)]; problems on bad syntax."""
    labels, i = [], 0
    while i < len(text):
        m = re.match(r"([^=]*)=\"", text[i:])
        if not m or not LABEL.match(m.group(1)):
            problems.append(f"{where}: bad label syntax at '{text[i:]}'")
            return labels
        name, i, value = m.group(1), i + m.end(), []
        while i < len(text) and text[i] != '"':
            if text[i] == "\\":
                if i + 1 >= len(text) or text[i + 1] not in '\\"n':
                    problems.append(f"{where}: bad escape in label {name}")
                    return labels
                value.append({"n": "\n"}.get(text[i + 1], text[i + 1]))
                i += 2
            else:
                value.append(text[i])
                i += 1
        if i >= len(text):
            problems.append(f"{where}: label {name} does not end")
            return labels
        labels.append((name, "".join(value)))
        i += 1
        if i < len(text):
            if text[i] != ",":
                problems.append(f"{where}: expected ',' after label {name}")
                return labels
            i += 1
    return labels


def parse_sample(line, where, problems):
    m = re.match(r"([^{\s]+)(\{(.*)\})?\s+(\S+)(\s+(-?\d+))?\Z", line)
    if not m:
        problems.append(f"{where}: not a sample line: {line}")
        return None
    name, labels, value = m.group(1), m.group(3), m.group(4)
    if not NAME.match(name):
        problems.append(f"{where}: bad metric name {name}")
    pairs = parse_labels(labels, where, problems) if labels else []
    if len({k for k, _ in pairs}) != len(pairs):
        problems.append(f"{where}: a label twice in {line}")
    if not VALUE.match(value):
        problems.append(f"{where}: bad value {value}")
        value = "NaN"
    return name, tuple(sorted(pairs)), float(value)


def family_of(name, families):
    """The TYPE'd family a sample name belongs to, or None."""
    for fam, typ in families.items():
        for suffix in SUFFIXES.get(typ, [""]):
            if name == fam + suffix:
                return fam
    return None


def check(text):
    problems, families, helps, samples = [], {}, set(), []
    order, current, lines = [], None, text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    else:
        problems.append("the text does not end with a newline")
    for n, line in enumerate(lines, 1):
        where = f"line {n}"
        if line == "# EOF":
            if n != len(lines):
                problems.append(f"{where}: '# EOF' is not the last line")
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) < 4 or parts[0] != "#" or parts[1] not in ("HELP", "TYPE"):
                problems.append(f"{where}: a comment that is neither HELP nor TYPE: {line}")
                continue
            kind, fam, rest = parts[1], parts[2], parts[3]
            if not NAME.match(fam):
                problems.append(f"{where}: bad family name {fam}")
            if kind == "HELP":
                if fam in helps:
                    problems.append(f"{where}: second HELP for {fam}")
                helps.add(fam)
                if re.search(r"\\[^\\n]", rest):
                    problems.append(f"{where}: bad escape in HELP of {fam}")
            else:
                if fam in families:
                    problems.append(f"{where}: second TYPE for {fam}")
                if rest not in SUFFIXES:
                    problems.append(f"{where}: unknown type {rest}")
                if any(s[2] is not None and s[2] == fam for s in samples):
                    problems.append(f"{where}: TYPE of {fam} after its samples")
                families[fam] = rest
            if fam != current:
                if fam in order:
                    problems.append(f"{where}: family {fam} is split")
                order.append(fam)
                current = fam
            continue
        s = parse_sample(line, where, problems)
        if not s:
            continue
        fam = family_of(s[0], families)
        if fam is None:
            problems.append(f"{where}: sample {s[0]} belongs to no TYPE'd family")
        elif fam != current:
            problems.append(f"{where}: sample {s[0]} is not with its family {fam}")
        samples.append((s[0], s[1], fam, s[2], where))
    # OpenMetrics: the names each family claims must not meet.
    claimed = {}
    for fam, typ in families.items():
        for suffix in set(SUFFIXES.get(typ, [""]) + [""]):
            other = claimed.setdefault(fam + suffix, fam)
            if other != fam:
                problems.append(f"clashing name: {fam + suffix} (families {other} and {fam})")
    for fam in helps - set(families):
        problems.append(f"HELP without TYPE: {fam}")
    seen = set()
    for name, labels, fam, value, where in samples:
        if (name, labels) in seen:
            problems.append(f"{where}: series {name}{dict(labels)} twice")
        seen.add((name, labels))
        typ = families.get(fam)
        if typ in ("counter", "histogram") and (math.isnan(value) or value < 0):
            problems.append(f"{where}: {name} is negative or NaN")
    for fam, typ in families.items():
        words = fam.split("_")
        for unit in BASE_UNITS:
            if unit in words[:-1]:
                problems.append(f"{fam}: the unit {unit} belongs at the end of the name")
        if set(words) & OTHER_UNITS:
            problems.append(f"{fam}: a unit other than a base unit (seconds, bytes)")
        if typ == "histogram":
            check_histogram(fam, samples, problems)
    return problems


def check_histogram(fam, samples, problems):
    series = {}
    for name, labels, f, value, where in samples:
        if f != fam:
            continue
        rest = tuple(kv for kv in labels if kv[0] != "le")
        h = series.setdefault(rest, {"buckets": [], "count": None})
        if name == fam + "_bucket":
            le = dict(labels).get("le")
            if le is None:
                problems.append(f"{where}: bucket without le")
                continue
            h["buckets"].append((float(le), value))
        elif name == fam + "_count":
            h["count"] = value
    for rest, h in series.items():
        les = [le for le, _ in h["buckets"]]
        counts = [c for _, c in h["buckets"]]
        what = f"{fam}{dict(rest)}"
        if les != sorted(les) or len(set(les)) != len(les):
            problems.append(f"{what}: le not ascending")
        if not les or les[-1] != math.inf:
            problems.append(f"{what}: no +Inf bucket")
        if counts != sorted(counts):
            problems.append(f"{what}: buckets not cumulative")
        if les and les[-1] == math.inf and h["count"] != counts[-1]:
            problems.append(f"{what}: _count {h['count']} is not the +Inf bucket {counts[-1]}")


def main():
    if len(sys.argv) != 2:
        print("usage: metrics_check.py FILE", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        problems = check(f.read())
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
