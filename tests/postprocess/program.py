"""A full-results post-processor for the tests, speaking KGS's protocol (a JSON document and
an empty line in, the same out). ``program.py MODE [MARKER]``:

- ``digits``: number words (cardinals and ordinals up to twenty) become digits in the best
  transcript and its word alignment;
- ``hang``: reads and never answers; ``garbage``: answers with something that is not JSON;
- ``crash-once``: exits on its first document if ``MARKER`` does not exist yet (creating it),
  and behaves as ``digits`` once restarted.
"""

import json
import os
import sys
import time

CARDINALS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
             "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
             "seventeen", "eighteen", "nineteen", "twenty"]
ORDINALS = {"first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th"}


def digit(word: str) -> str:
    bare = word.lower().strip(".,!?")
    tail = word[len(word.rstrip(".,!?")):]
    if bare in CARDINALS:
        return str(CARDINALS.index(bare)) + tail
    if bare in ORDINALS:
        return ORDINALS[bare] + tail
    return word


def rewrite(result: dict) -> dict:
    best = result["result"]["hypotheses"][0]
    best["transcript"] = " ".join(digit(w) for w in best["transcript"].split())
    for entry in best.get("word-alignment", []):
        entry["word"] = digit(entry["word"])
    return result


def documents():
    lines = []
    for line in sys.stdin:
        if line.strip():
            lines.append(line)
        elif lines:
            yield "".join(lines)
            lines = []


def main() -> None:
    mode = sys.argv[1]
    if mode == "crash-once" and not os.path.exists(sys.argv[2]):
        open(sys.argv[2], "w").close()
        next(documents())
        sys.exit(3)
    for document in documents():
        if mode == "hang":
            time.sleep(3600)
        if mode == "garbage":
            out = "this is not json"
        else:
            out = json.dumps(rewrite(json.loads(document)))
        sys.stdout.write(out + "\n\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
