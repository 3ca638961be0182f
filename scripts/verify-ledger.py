#!/usr/bin/env python3
"""Independent ledger verifier, written from docs/ledger-format.md alone.

Usage: verify-ledger.py LEDGER_DIR     (exit 0 intact, 1 damaged, 2 usage/I-O error)
"""
import hashlib
import json
import math
import os
import re
import sys

ZERO = "0" * 64
FIELDS = {"action": str, "details": object, "element_id": str, "element_prev": str, "element_type": str,
          "host": str, "prev": str, "priority": str, "seq": int, "source": str, "summary": str, "ts": int, "hash": str}
SUFFIX = re.compile(rb',"hash":"([0-9a-f]{64})"\}$')


class DuplicateKey(ValueError):
    pass


def no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(f"duplicate key {json.dumps(key)}")
        seen[key] = value
    return seen


def number(x):
    """The doc's "Numbers": integers that fit 64 bits plainly, everything else as a double."""
    if isinstance(x, int) and -(2**63) <= x < 2**64:
        return str(x)
    x = float(x)
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0.0"
    mantissa, _, exponent = repr(abs(x)).partition("e")  # shortest round-trip digits
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    first = len(all_digits) - len(all_digits.lstrip("0"))
    exp = int(exponent or 0) + len(whole) - 1 - first  # value = d1.d2... x 10^exp
    digits = all_digits[first:].rstrip("0")
    if -5 <= exp < 16:
        if exp < 0:
            return sign + "0." + "0" * (-exp - 1) + digits
        head = digits[: exp + 1].ljust(exp + 1, "0")
        return sign + head + "." + (digits[exp + 1 :] or "0")
    return sign + digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + "e" + ("-" if exp < 0 else "+") + str(abs(exp))


def canonical(value):
    """The doc's canonical encoding."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-8"))
        return "{" + ",".join(canonical(k) + ":" + canonical(value[k]) for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return number(value)


def main(directory):
    names = sorted(n for n in os.listdir(directory) if not n.endswith(".tmp"))
    for n in names:
        if not re.fullmatch(r"\d{20}\.jsonl", n):
            print(f"unexpected file {n}")
            return 2
    expected_seq, prev, element_heads, count = 1, ZERO, {}, 0
    for index, name in enumerate(names):
        data = open(os.path.join(directory, name), "rb").read()
        if not data:
            # An empty segment: only last, and only named for the next seq.
            if index != len(names) - 1 or int(name[:20]) != expected_seq:
                print(f"DAMAGED at seq {expected_seq} ({name}): an empty segment where records must be")
                return 1
            continue
        lines = data.split(b"\n")
        tail = lines.pop()  # bytes after the last newline
        for line_no, line in enumerate(lines, 1):
            def bad(why):
                print(f"DAMAGED at seq {expected_seq} ({name} line {line_no}): {why}")
                return 1
            m = SUFFIX.search(line)
            if not m:
                return bad("the line does not end with the hash field")
            try:
                record = json.loads(line, object_pairs_hook=no_duplicates)
            except DuplicateKey as e:
                return bad(f"not canonical: {e}")
            except ValueError as e:
                return bad(f"not JSON: {e}")
            if not isinstance(record, dict) or set(record) != set(FIELDS):
                return bad("wrong set of fields")
            for field, kind in FIELDS.items():
                if kind is not object and (not isinstance(record[field], kind) or isinstance(record[field], bool)):
                    return bad(f"{field} has the wrong type")
            body = line[: m.start()] + b"}"
            stored = m.group(1).decode()
            if hashlib.sha256(body).hexdigest() != stored or record["hash"] != stored:
                return bad("hash does not match the content")
            del record["hash"]
            if canonical(record).encode("utf-8") != body:
                return bad("not canonical: re-encoding the body gives other bytes")
            if record["seq"] != expected_seq:
                return bad(f"seq is {record['seq']}")
            if line_no == 1 and record["seq"] != int(name[:20]):
                return bad("segment name does not match its first record")
            if record["prev"] != prev:
                return bad("prev does not link to the previous record")
            if record["element_prev"] != element_heads.get(record["element_id"], ZERO):
                return bad(f"element chain of {record['element_id']} broken")
            prev = stored
            element_heads[record["element_id"]] = prev
            expected_seq += 1
            count += 1
        if tail:
            if index == len(names) - 1:
                print(f"INCOMPLETE: seq {expected_seq} is torn ({len(tail)} bytes)")
            else:
                print(f"DAMAGED at seq {expected_seq} ({name}): segment ends inside a record")
            return 1
    print(f"intact: {count} records, head {prev}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip())
        sys.exit(2)
    try:
        sys.exit(main(sys.argv[1]))
    except OSError as e:
        print(f"error: {e}")
        sys.exit(2)
