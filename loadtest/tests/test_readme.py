"""The README as a new user meets it: what the project is, the two commands, then a quick
start (prerequisites, timings and sample output, the report, troubleshooting) before the
reference. Its sample output has the shape the main job prints (``test_load.py`` checks
the real output against the same patterns)."""

import re
from pathlib import Path

from django.conf import settings

README = (Path(settings.BASE_DIR) / "README.md").read_text()
PHASES = ["data", "serve", "check", "metrics", "swarm", "stop", "report"]
PROGRESS = r"^  \d+:\d\d  users +\d+/\d+ +[\d,.]+ req/s  p95 +\d+ ms  failures \d+ \([\d.]+/s\)$"


def test_it_says_what_it_is_then_gives_the_two_commands():
    title, rest = README.split("\n", 1)
    assert title == "# data_project"
    intro, block = rest.split("```sh\n", 1)
    sentences = [s for s in re.split(r"(?<=\.)\s+", intro.strip()) if s]
    assert 1 <= len(sentences) <= 2 and "Django" in sentences[0], sentences
    commands = [line.split()[:2] for line in block.split("```")[0].splitlines()]
    assert commands == [["make", "demo"], ["make", "test"]]


def test_a_quick_start_comes_before_the_reference():
    prose = re.sub(r"^```.*?^```", "", README, flags=re.M | re.S)  # code blocks left out
    headings = re.findall(r"^#{1,2} .*$", prose, re.M)
    assert headings[1:3] == ["## Quick start", "# Reference"]
    quick = README[README.index("## Quick start") : README.index("# Reference")]
    for needed in ("Prerequisites", "Debian", "root", "apt-get", "8000", "8089", "GB of disk"):
        assert needed in quick, needed
    for needed in ("reports/index.html", "Troubleshooting", "already in use", "PostgreSQL"):
        assert needed in quick, needed
    assert ". .venv/bin/activate" in quick  # locust and gunicorn live in the venv
    assert re.search(r"\d+ s measured", quick) and re.search(r"about \d+ s in all", quick)


def test_the_sample_output_has_the_main_jobs_shape():
    quick = README[README.index("## Quick start") : README.index("# Reference")]
    sample = quick[quick.index("```\n== ") :].split("```")[1]
    phases = [line[3:].split(":")[0] for line in sample.splitlines() if line.startswith("== ")]
    assert phases == PHASES
    assert re.search(r"^== serve: nginx on \S+ -> gunicorn on \S+ \(", sample, re.M)
    assert len(re.findall(PROGRESS, sample, re.M)) >= 2
