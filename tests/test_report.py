"""`provisioner report`: the HTML page's structure read back with Python's html parser, what it
refuses to overwrite, what it never writes, and the page laid out in a real headless chromium.

The scenario (one site, made once for the module): the quickstart with a hostile désignation
and entity name, applied at CREATED with three consultations, renewed at IN_WINDOW (generation
1 is retained: consultations are bound to it), then generation 1's copy deleted from the
workstation ws-accueil. Reported at REPORTED:
- 2026-TX-014 bound to g1, deadline 20/12/2028 12:00 after g1's expiry (30/11/2028): red;
- 2028-TX-090 bound to g1, deadline and opening before the expiry: red only because g1 is
  missing from ws-accueil (bound-missing), not for its dates;
- syndicat-eaux has none, and every copy present.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO, Runner, require, run_cli
from tests.engine_helpers import serial, state_rows
from tests.test_consultations import CREATED, IN_WINDOW

REPORTED = "2028-10-25T09:00:00+00:00"
HOSTILE_DESIGNATION = 'Commune <script>alert("d")</script> & "Co"'
HOSTILE_NAME = "Commune <img src=x onerror=alert(1)>"
CONSULTATIONS = f"""version: 1
consultations:
  - reference: 2026-TX-014
    title: Voirie <b>rue</b> des Lilas
    entity: commune-exemple
    designation: '{HOSTILE_DESIGNATION}'
    status: open
    deadline: 2028-12-20T12:00:00+01:00
    opening: 2029-01-10
  - reference: 2028-TX-090
    title: Fournitures scolaires
    entity: commune-exemple
    designation: '{HOSTILE_DESIGNATION}'
    status: open
    deadline: 2028-11-10T12:00:00+01:00
    opening: 2028-11-20
"""


# ---------------------------------------------------------------- a small DOM


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    content: list[Node | str] = field(default_factory=list)  # in document order

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def all_text(self) -> str:
        return "".join(c if isinstance(c, str) else c.all_text() for c in self.content)

    def find(self, tag: str = "", cls: str = "", **attrs: str) -> list[Node]:
        found = []
        for c in self.children:
            if (
                (not tag or c.tag == tag)
                and (not cls or set(cls.split()) <= c.classes)
                and all(c.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
            ):
                found.append(c)
            found += c.find(tag, cls, **attrs)
        return found

    def one(self, tag: str = "", cls: str = "", **attrs: str) -> Node:
        found = self.find(tag, cls, **attrs)
        assert len(found) == 1, (tag, cls, attrs, len(found))
        return found[0]


VOID = {"meta", "input", "br", "img", "link", "hr", "col", "area", "base", "wbr", "source"}


class Tree(HTMLParser):
    """Elements, attributes and text as the HTML parser sees them (SVG's self-closing
    elements included)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.at = self.root
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.at)
        self.at.children.append(node)
        self.at.content.append(node)
        if tag not in VOID:
            self.at = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.at)
        self.at.children.append(node)
        self.at.content.append(node)

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.at
        while node is not None and node.tag != tag:
            node = node.parent
        assert node is not None and node.parent is not None, f"unbalanced </{tag}>"
        self.at = node.parent

    def handle_data(self, data: str) -> None:
        self.at.content.append(data)


# ---------------------------------------------------------------- the scenario


def apply(manifest: Path, at: str) -> None:
    done = run_cli(
        "apply",
        "--auto-approve",
        manifest,
        "--consultations",
        manifest.parent / "consultations.yaml",
        env={"PROVISIONER_NOW": at},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def report(manifest: Path, out: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "report",
        manifest,
        "--consultations",
        manifest.parent / "consultations.yaml",
        "--out",
        out,
        *extra,
        env={"PROVISIONER_NOW": REPORTED},
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scenario applied, renewed, with g1 deleted from ws-accueil; a pristine copy kept
    beside it (`site.parent / "pristine"`)."""
    folder = tmp_path_factory.mktemp("report") / "site"
    folder.mkdir()
    text = (EXAMPLES / "quickstart.yaml").read_text()
    text = text.replace("designation: Commune Exemple", f"designation: '{HOSTILE_DESIGNATION}'")
    text = text.replace("name: Commune d'Exemple", f"name: '{HOSTILE_NAME}'")
    assert HOSTILE_DESIGNATION in text and HOSTILE_NAME in text
    (folder / "quickstart.yaml").write_text(text)
    shutil.copytree(EXAMPLES / "secrets", folder / "secrets")
    manifest = folder / "quickstart.yaml"
    (folder / "consultations.yaml").write_text("version: 1\nconsultations: []\n")
    apply(manifest, CREATED)  # the keys, then the consultations made with them
    (folder / "consultations.yaml").write_text(CONSULTATIONS)
    apply(manifest, CREATED)
    apply(manifest, IN_WINDOW)
    (folder / "demo-out" / "workstations" / "ws-accueil" / "commune-exemple.g1.p12").unlink()
    shutil.copytree(folder, folder.parent / "pristine", symlinks=True)
    return manifest


@pytest.fixture(scope="module")
def page(site: Path) -> tuple[Path, str]:
    out = site.parent.parent / "report.html"
    done = report(site, out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not done.stderr, done.stderr
    assert f"Wrote the report of 2 entities to {out}" in done.stdout
    return out, out.read_text()


@pytest.fixture
def dom(page: tuple[Path, str]) -> Node:
    return Tree(page[1]).root


# ---------------------------------------------------------------- structure


def test_each_entity_has_a_section_an_index_row_and_a_timeline(dom: Node) -> None:
    for entity in ("commune-exemple", "syndicat-eaux"):
        section = dom.one("section", "entity", id=f"e-{entity}")
        assert section.one("svg", "timeline")
        row = dom.one("nav", id="index").one("a", href=f"#e-{entity}")
        assert row.all_text() == entity
        assert section.one("svg", "timeline").one("use", "today").attrs["href"] == "#today"
    assert dom.one("g", "today", id="today").attrs["data-date"] == "25/10/2028"
    assert dom.one("section", id="e-commune-exemple").classes >= {"entity", "crit"}
    assert dom.one("section", id="e-syndicat-eaux").classes >= {"entity", "ok"}


def test_each_generation_is_a_bar_with_its_status_and_dates(dom: Node) -> None:
    commune = dom.one("section", id="e-commune-exemple")
    g1 = commune.one("g", "gen retained", data_generation="1")
    g2 = commune.one("g", "gen current", data_generation="2")
    assert g1.attrs["data-not-before"] == "01/12/2026"
    assert g1.attrs["data-not-after"] == "30/11/2028"
    assert g2.attrs["data-not-before"] == "20/10/2028"
    assert g2.attrs["data-not-after"] == "20/10/2030"
    for bar in (g1, g2):
        assert bar.one("rect", "bar") and bar.one("rect", "renew")
    # The renewal window (60 days) is inside the bar, at its end.
    rect, renew = g1.one("rect", "bar"), g1.one("rect", "renew")
    end = float(rect.attrs["x"]) + float(rect.attrs["width"])
    assert float(renew.attrs["x"]) + float(renew.attrs["width"]) == pytest.approx(end, abs=1)
    assert float(renew.attrs["x"]) > float(rect.attrs["x"])
    syndicat = dom.one("section", id="e-syndicat-eaux")
    assert syndicat.one("g", "gen retired", data_generation="1")  # nothing bound to it
    assert syndicat.one("g", "gen current", data_generation="2")


def test_consultations_are_markers_at_their_dates_linked_to_their_generation(dom: Node) -> None:
    commune = dom.one("section", id="e-commune-exemple")
    late = commune.one("g", "cons", data_reference="2026-TX-014")
    assert late.attrs["data-deadline"] == "20/12/2028 12:00"
    assert late.attrs["data-opening"] == "10/01/2029"
    assert late.attrs["data-generation"] == "1"
    # check's rules: the deadline falls after g1's expiry, and g1 is missing from a
    # workstation: red marker, red link to the bar.
    assert "risk" in late.classes
    assert "risk" in late.one("path", "deadline").classes
    assert "risk" in late.one("line", "link").classes
    early = commune.one("g", "cons", data_reference="2028-TX-090")
    assert early.attrs["data-deadline"] == "10/11/2028 12:00"
    assert early.attrs["data-opening"] == "20/11/2028"
    # Its dates are before the expiry; only the missing copy puts it at risk.
    assert "risk" in early.classes and "risk" in early.one("line", "link").classes
    table = commune.one("table", "cons")
    cells = [td.all_text() for td in table.find("td")]
    assert "20/12/2028 12:00" in cells and "10/01/2029" in cells
    risky_deadline = [td for td in table.find("td", "risk")]
    assert [td.all_text() for td in risky_deadline] == ["20/12/2028 12:00"]
    # The link starts on the bound generation's bar row.
    bar = commune.one("g", "gen", data_generation="1").one("rect", "bar")
    link = late.one("line", "link")
    middle = float(bar.attrs["y"]) + float(bar.attrs["height"]) / 2
    assert float(link.attrs["y1"]) == pytest.approx(middle, abs=1)


def copies(section: Node) -> dict[tuple[str, str], str]:
    """(target, generation) -> the cell's class beside `copy`, read as the eye does: the row's
    target, the column's generation."""
    table = section.one("table", "copies")
    numbers = [th.attrs["data-generation"] for th in table.one("thead").find("th")[1:]]
    out = {}
    for tr in table.one("tbody").find("tr"):
        cells = tr.find("td", "copy")
        assert len(cells) == len(numbers)
        for n, td in zip(numbers, cells, strict=True):
            (state,) = td.classes - {"copy"}
            out[(tr.attrs["data-target"], n)] = state
    return out


def test_copies_by_target_show_the_missing_one(dom: Node) -> None:
    commune = dom.one("section", id="e-commune-exemple")
    assert copies(commune) == {
        ("backup-share", "2"): "present",
        ("backup-share", "1"): "present",
        ("ws-marches", "2"): "present",
        ("ws-marches", "1"): "present",
        ("ws-accueil", "2"): "present",
        ("ws-accueil", "1"): "missing",
    }
    missing = commune.one("td", "copy missing")
    assert missing.all_text() == "missing"
    assert missing.attrs["title"].endswith("ws-accueil/commune-exemple.g1.p12: no file there")
    syndicat = copies(dom.one("section", id="e-syndicat-eaux"))
    assert syndicat == {
        ("backup-share", "2"): "present",
        ("backup-share", "1"): "present",  # a retired generation stays on the shared location
        ("ws-marches", "2"): "present",
        ("ws-marches", "1"): "none",
    }


def test_warnings_carry_checks_codes_and_reasons(dom: Node) -> None:
    commune = dom.one("section", id="e-commune-exemple")
    items = [li.all_text() for li in commune.one("ul", "findings").find("li")]
    assert any(
        "CRITICAL [expires-before-deadline]" in t
        and "before the deadline for bids of consultation 2026-TX-014" in t
        for t in items
    ), items
    assert any(
        "CRITICAL [bound-missing]" in t and "missing from workstation ws-accueil" in t
        for t in items
    ), items
    probe = dom.one("section", id="answer").one("p", "probe").all_text()
    assert "PROVISIONER CRITICAL - " in probe  # the probe's own line, last in the answer


def test_the_first_screen_says_in_french_what_is_at_risk_and_what_to_do(dom: Node) -> None:
    """The page leads with the answer: the verdict in words, then one sentence per risk
    naming the consultation, its dates, what is wrong and what to do."""
    answer = dom.one("header").one("section", id="answer")
    assert answer.attrs["lang"] == "fr" and "crit" in answer.classes
    title = answer.one("h2").all_text()
    assert title.startswith("CRITICAL ") and "risques critiques à traiter maintenant" in title
    risks = [li.all_text() for li in answer.one("ol", "risks").find("li")]
    expires = [r for r in risks if "expire le 30/11/2028, avant la date limite" in r]
    assert len(expires) == 1, risks
    assert expires[0].startswith(
        "Consultation 2026-TX-014 « Voirie <b>rue</b> des Lilas », "  # text, not markup
        f"{HOSTILE_NAME} (date limite de remise des plis le 20/12/2028 12:00; ouverture des "
        "plis le 10/01/2029) : "
    ), expires[0]
    assert "À faire : prévenir la plateforme sans attendre" in expires[0]
    missing = [r for r in risks if "manque sur le poste agent ws-accueil" in r]
    assert {r.split(" « ", 1)[0] for r in missing} == {
        "Consultation 2026-TX-014",
        "Consultation 2028-TX-090",
    }, risks
    assert all(
        r.endswith("À faire : lancer `provisioner apply`, qui la remet en place.") for r in missing
    )
    # Warnings wait, folded under the risks.
    assert "avertissement" in answer.one("details").one("summary").all_text()
    # The timeline says which comes first where a point cannot: g1 ends 20 days before.
    late = dom.one("section", id="e-commune-exemple").one("g", "cons", data_reference="2026-TX-014")
    assert late.one("line", "expires-first")
    assert (
        "|◂ its bi-clé expires 20 days before the deadline (30/11/2028)"
        in late.one("tspan", "expires-first").all_text()
    )


def test_an_entity_whose_copies_are_in_place_but_at_risk_is_not_shown_ready(
    fresh: Path, tmp_path: Path
) -> None:
    """Copies repaired, the deadline still after the bound key's expiry: CRITICAL, and the
    section says its copies are up to date but at risk, never a green "Ready"."""
    apply(fresh, REPORTED)  # writes the missing copy back
    out = tmp_path / "r.html"
    assert report(fresh, out).returncode == 0
    section = Tree(out.read_text()).root.one("section", id="e-commune-exemple")
    flag = section.one("p", "ready")
    assert "no" in flag.classes and "yes" not in flag.classes
    assert flag.all_text() == "Copies up to date, but at risk: expires-before-deadline (see below)"
    assert "crit" in section.classes


def test_last_audit_events_come_from_the_state(site: Path, dom: Node) -> None:
    commune = dom.one("section", id="e-commune-exemple")
    actions = [tr.find("td")[1].all_text() for tr in commune.one("table", "audit").find("tr")]
    newest = [
        a
        for (a,) in state_rows(
            site,
            "SELECT action FROM audit WHERE entity = 'commune-exemple' ORDER BY id DESC LIMIT 3",
        )
    ]
    assert actions == newest and len(actions) == 3


def test_hostile_names_are_text_never_markup(page: tuple[Path, str], dom: Node) -> None:
    _, text = page
    assert len(dom.find("script")) == 1  # the page's own filter, nothing from a name
    assert not dom.find("img") and not dom.find("b")
    assert not [n for n in dom.find() if any(k.startswith("on") for k in n.attrs)]
    commune = dom.one("section", id="e-commune-exemple")
    assert HOSTILE_NAME in commune.one("span", "name").all_text()
    assert f"« {HOSTILE_DESIGNATION} »" in commune.one("table", "gens").all_text()
    assert "&lt;script&gt;alert(&quot;d&quot;)&lt;/script&gt; &amp; &quot;Co&quot;" in text


def test_self_contained_no_secret_french_dates(site: Path, page: tuple[Path, str]) -> None:
    _, text = page
    # Nothing fetched: no URL, and a policy that forbids any.
    assert not re.search(r"(?:src|href)=\"(?!#)", text)
    assert "http://" not in text and "https://" not in text and "@import" not in text
    policy = Tree(text).root.one("meta", http_equiv="Content-Security-Policy")
    assert policy.attrs["content"].startswith("default-src 'none';")
    for secret in (site.parent / "secrets").iterdir():
        assert secret.read_text().strip() not in text
    assert "Made on 25/10/2028 11:00 (Europe/Paris)" in text
    assert "@page{size:A4" in text


def test_french_formats_in_paris_time() -> None:
    import datetime as dt

    from provisioner.report import fr

    utc = dt.UTC
    # Summer and winter offsets; a date the file gave without a time is midnight in Paris.
    assert fr.date_time(dt.datetime(2028, 7, 14, 10, 0, tzinfo=utc)) == "14/07/2028 12:00"
    assert fr.date_time(dt.datetime(2028, 12, 20, 11, 0, tzinfo=utc)) == "20/12/2028 12:00"
    assert fr.date_time(dt.datetime(2028, 8, 2, 22, 0, tzinfo=utc)) == "03/08/2028"
    assert fr.date(dt.datetime(2028, 12, 31, 23, 30, tzinfo=utc)) == "01/01/2029"
    assert fr.month(dt.datetime(2027, 2, 1, tzinfo=utc)) == "févr. 2027"
    assert fr.number(1234567) == "1\u202f234\u202f567" and fr.number(-999) == "-999"
    assert fr.days(1) == "1 day" and fr.days(1500) == "1\u202f500 days"


# ---------------------------------------------------------------- what it writes


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def restore(site: Path) -> None:
    """The site as the fixture made it, in place (the state records absolute paths)."""
    shutil.rmtree(site.parent)
    shutil.copytree(site.parent.parent / "pristine", site.parent, symlinks=True)


@pytest.fixture
def fresh(site: Path) -> Iterator[Path]:
    """The scenario's site for a test that changes it, put back afterwards."""
    restore(site)
    yield site
    restore(site)


def test_reads_the_state_and_writes_only_its_file(site: Path, tmp_path: Path) -> None:
    before = tree(site.parent)
    audit = state_rows(site, "SELECT count(*) FROM audit")
    number = serial(site)
    out = tmp_path / "r.html"
    done = report(site, out)
    assert done.returncode == 0, done.stderr
    assert tree(site.parent) == before
    assert serial(site) == number and state_rows(site, "SELECT count(*) FROM audit") == audit
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary left


def test_refuses_to_overwrite_a_file_that_is_not_a_report(site: Path, tmp_path: Path) -> None:
    precious = tmp_path / "notes.html"
    precious.write_text("<html><body>my notes</body></html>")
    done = report(site, precious)
    assert done.returncode == 1
    assert done.stderr.startswith(f"Error: {precious}: exists and is not a report written by")
    assert precious.read_text() == "<html><body>my notes</body></html>"
    done = report(site, site)  # --out MANIFEST by mistake
    assert done.returncode == 1 and "is not a report" in done.stderr
    assert "designation:" in site.read_text()
    done = report(site, tmp_path / "no-such-folder" / "r.html")
    assert done.returncode == 1 and "no such folder for the report" in done.stderr
    assert not (tmp_path / "no-such-folder").exists()
    # A page that starts as a report and goes on with someone's notes is not one any more.
    previous = tmp_path / "r.html"
    assert report(site, previous).returncode == 0
    assert report(site, previous).returncode == 0  # a previous report is replaced
    edited = previous.read_bytes()[:300] + b"USER DATA\n"
    previous.write_bytes(edited)
    done = report(site, previous)
    assert done.returncode == 1 and "is not a report" in done.stderr
    assert previous.read_bytes() == edited


def test_an_unreadable_plan_is_refused_before_anything_is_written(
    site: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.html"
    done = report(site, out, "--plan", site)
    assert done.returncode == 1
    assert done.stderr.startswith(f"Error: {site}: unreadable plan file")
    assert not out.exists()


def test_before_the_first_apply_it_reports_and_creates_no_state(
    cli: Runner, quickstart: Path
) -> None:
    out = quickstart.parent / "first.html"
    done = cli("report", quickstart, "--out", out)
    assert done.returncode == 0, done.stderr
    assert not (quickstart.parent / ".provisioner").exists()
    assert not (quickstart.parent / "demo-out").exists()
    dom = Tree(out.read_text()).root
    assert "(no state yet)" in dom.one("header").find("p", "meta")[0].all_text()
    for entity in ("commune-exemple", "syndicat-eaux"):
        section = dom.one("section", id=f"e-{entity}")
        assert section.one("text", "none").all_text() == "no bi-clé recorded yet"
        assert "[no-key] no bi-clé yet: run provisioner apply" in section.all_text()


def test_replaces_a_previous_report(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert report(site, out).returncode == 0
    first = out.read_text()
    out.write_text(first.replace("Made on", "Made long ago on"))
    assert report(site, out).returncode == 0
    assert out.read_text() == first


def test_with_a_plan_shows_its_changes_worded_as_plan_does(fresh: Path, tmp_path: Path) -> None:
    saved = tmp_path / "repair.plan"
    shown = run_cli(
        "plan",
        fresh,
        "--consultations",
        fresh.parent / "consultations.yaml",
        "--out",
        saved,
        env={"PROVISIONER_NOW": REPORTED},
    )
    assert shown.returncode == 0, shown.stderr
    out = tmp_path / "r.html"
    done = report(fresh, out, "--plan", saved)
    assert done.returncode == 0, done.stderr
    dom = Tree(out.read_text()).root
    items = [li.all_text() for li in dom.one("section", id="e-commune-exemple").find("li", "act")]
    # Every action line of `plan` is in the report, symbol, label, reason and message.
    block = shown.stdout.split("# commune-exemple\n", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in block.splitlines()]
    assert lines and len(items) == len(lines)
    for line, item in zip(lines, items, strict=True):
        assert re.sub(r"\s+", " ", item) == re.sub(r"\s+", " ", line)
    assert items[0].startswith("+ write g1 on ws-accueil:")
    summary = dom.one("section", id="plan").one("p", "summary").all_text()
    assert summary == "Plan: 1 to create, 0 to update, 0 to remove."
    assert not dom.one("section", id="plan").find("p", "stale")
    # Applied since: the report says apply would refuse the plan as stale.
    apply(fresh, REPORTED)
    out.unlink()
    done = report(fresh, out, "--plan", saved)
    assert done.returncode == 0, done.stderr
    stale = Tree(out.read_text()).root.one("p", "stale").all_text()
    assert "would refuse it as stale" in stale


def test_a_plan_of_another_state_is_refused(site: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(site.parent.parent / "pristine", other, symlinks=True)
    saved = tmp_path / "other.plan"
    shown = run_cli(
        "plan",
        other / "quickstart.yaml",
        "--consultations",
        other / "consultations.yaml",
        "--out",
        saved,
        env={"PROVISIONER_NOW": REPORTED},
    )
    assert shown.returncode == 0, shown.stderr
    out = tmp_path / "r.html"
    done = report(site, out, "--plan", saved)
    assert done.returncode == 1
    assert "the plan was computed for the state" in done.stderr
    assert not out.exists()
    # The same plan made to look like this state's, its actions damaged: a message, no trace.
    document = json.loads(saved.read_text())
    document["state_dir"] = str(site.parent / ".provisioner")
    document["lineage"] = None
    document["plan"]["actions"] = [{"kind": "write-copy"}]
    saved.write_text(json.dumps(document))
    done = report(site, out, "--plan", saved)
    assert done.returncode == 1
    assert done.stderr.startswith(f"Error: {saved}: unreadable plan file: KeyError(")
    assert "Traceback" not in done.stderr and not out.exists()


# ---------------------------------------------------------------- in a real browser


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    require(path is not None, "chromium is not installed", "apt-get install chromium")
    assert path is not None
    return path


# Run in the page after layout (a copy of the report, its policy extended to this script's
# hash): measures what the eye sees and writes it into the DOM for --dump-dom.
PROBE = """(function(){
function box(e){var r=e.getBoundingClientRect();return [r.left,r.right,r.top,r.bottom];}
var s=document.getElementById("e-commune-exemple"),out={errors:window.__errors||[]};
out.g1=box(s.querySelector('g.gen[data-generation="1"] rect.bar'));
out.g2=box(s.querySelector('g.gen[data-generation="2"] rect.bar'));
out.late=box(s.querySelector('g.cons[data-reference="2026-TX-014"] path.deadline'));
out.early=box(s.querySelector('g.cons[data-reference="2028-TX-090"] path.deadline'));
out.today=box(s.querySelector("use.today"));
out.red=getComputedStyle(s.querySelector("path.deadline.risk")).fill;
out.ready=document.documentElement.getAttribute("data-ready");
var a=document.getElementById("answer");out.answer=box(a);
out.answerTitle=a.querySelector("h2").innerText;
out.firstRisk=a.querySelector("ol.risks li").innerText;
var c=s.querySelector("table.copies");out.cols=[].map.call(
  c.querySelectorAll("thead th[data-generation]"),function(th,i){
  var td=c.querySelectorAll("tbody tr")[0].querySelectorAll("td.copy")[i];
  var h=th.getBoundingClientRect(),d=td.getBoundingClientRect();
  return [(h.left+h.right)/2,(d.left+d.right)/2];});
out.printBreak=[];[].forEach.call(document.styleSheets,function(sh){
  [].forEach.call(sh.cssRules,function(r){if(r.media&&r.media.mediaText==="print"){
  [].forEach.call(r.cssRules,function(q){if(q.selectorText==="section.entity")
  out.printBreak.push(q.style.breakInside);});}});});
var f=document.getElementById("filter");f.value="syndicat";
f.dispatchEvent(new Event("input"));
out.shown=[].filter.call(document.querySelectorAll("section.entity"),
  function(e){return e.offsetParent!==null;}).map(function(e){return e.id;});
var p=document.createElement("pre");p.id="probe";p.textContent=JSON.stringify(out);
document.body.appendChild(p);
})();"""
CATCH = 'window.__errors=[];window.addEventListener("error",function(e){__errors.push(e.message)});'


def browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
            "--window-size=1100,1400",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def console_errors(stderr: str) -> list[str]:
    """Lines chromium logs for the page's console errors, uncaught exceptions and refused
    loads (a Content-Security-Policy violation is logged as a console error)."""
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "Refused to" in line
    ]


def test_in_chromium_the_layout_puts_each_marker_where_the_dates_say(
    page: tuple[Path, str], tmp_path: Path
) -> None:
    import base64
    import hashlib

    binary = chromium()
    out, text = page
    # The real page, screenshot kept as an artefact.
    artefacts = REPO / "build" / "artifacts"
    artefacts.mkdir(parents=True, exist_ok=True)
    shot = artefacts / "report-scenario.png"
    shot.unlink(missing_ok=True)
    done = browser(binary, tmp_path / "profile1", f"--screenshot={shot}", out.as_uri())
    print(f"screenshot of the scenario's report: {shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000, done.stderr[-2000:]
    assert console_errors(done.stderr) == []
    # A copy with the probe: the DOM after layout and after the page's own script ran.
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in (CATCH, PROBE)
    )
    probed = text.replace("script-src ", f"script-src {hashes} ", 1)
    probed = probed.replace("<style>", f"<script>{CATCH}</script><style>", 1)
    probed = probed.replace("</body>", f"<script>{PROBE}</script></body>", 1)
    copy = tmp_path / "probed.html"
    copy.write_text(probed)
    done = browser(binary, tmp_path / "profile2", "--dump-dom", copy.as_uri())
    assert console_errors(done.stderr) == [], done.stderr[-3000:]
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout)
    assert match, done.stdout[-2000:]
    found = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert found["errors"] == [] and found["ready"] == "1"  # the page's script ran, allowed
    left, right, top, bottom = 0, 1, 2, 3
    g1, g2, late, early = found["g1"], found["g2"], found["late"], found["early"]
    assert g1[right] - g1[left] > 100 and g2[top] > g1[bottom]  # g2 on the row below
    # The 20/12/2028 deadline stands past g1's end (30/11/2028); the 10/11 one within it.
    assert (late[left] + late[right]) / 2 > g1[right]
    assert (early[left] + early[right]) / 2 < g1[right]
    # Today (25/10/2028) is after g2's start (20/10/2028), before g1's end.
    assert g2[left] < found["today"][left] < g1[right]
    assert found["red"] == "rgb(198, 40, 40)"
    assert found["shown"] == ["e-syndicat-eaux"]  # the filter hides the other entity
    # The answer first: in French, on the first screen, above everything else.
    assert found["answer"][top] < 400 and found["answer"][bottom] < 1400, found["answer"]
    assert "à traiter maintenant" in found["answerTitle"], found["answerTitle"]
    assert found["firstRisk"].startswith("Consultation 2028-TX-090"), found["firstRisk"]
    assert "À faire :" in found["firstRisk"]
    # Each generation's header sits over its column.
    assert found["cols"] and all(abs(h - d) < 2 for h, d in found["cols"]), found["cols"]
    # Printed, an entity's section is kept on one A4 page where it fits.
    assert found["printBreak"] in (["avoid"], ["avoid-page"]), found["printBreak"]


@pytest.mark.parametrize(
    "limit", [[], ["--limit", "commune-exemple"], ["--limit", "syndicat-eaux"]]
)
def test_the_report_gives_the_verdict_check_gives_for_the_same_limit(
    site: Path, tmp_path: Path, limit: list[str]
) -> None:
    """One verdict for both: the report's first line is check's, --limit included (it once
    counted every entity's findings in a report limited to one)."""
    out = tmp_path / "r.html"
    reported = report(site, out, *limit)
    checked = run_cli(
        "check",
        site,
        "--consultations",
        site.parent / "consultations.yaml",
        *limit,
        env={"PROVISIONER_NOW": REPORTED},
    )
    line = checked.stdout.splitlines()[0]
    assert line.startswith("PROVISIONER "), checked.stdout
    assert reported.stdout.splitlines()[1] == line, (reported.stdout, checked.stdout)
    document = json.loads(report(site, tmp_path / "j.html", *limit, "--json").stdout)
    assert document["check"] == {"exit_code": checked.returncode, "summary": line}
