"""The audit report: OUT/report.html (self-contained, escaped, deterministic) and OUT/report.md."""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from leo_verify import cli
from leo_verify.errors import DataError, InputFileError
from leo_verify.report import render_html, render_markdown, write_reports

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples" / "nets"
MODEL, DOMAIN = EX / "tiny_mlp.onnx", EX / "tiny_mlp_domain.json"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# --------------------------------------------------------------------------
# a tiny DOM from html.parser: checks nesting and lets tests query elements

class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, dict(attrs), parent, [], []

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag, **attrs):
        return [n for n in self.iter() if n.tag == tag and all(
            (v in n.attrs.get(k.rstrip("_"), "").split()) if k == "class_" else n.attrs.get(k) == v
            for k, v in attrs.items())]

    def all_text(self):
        return "".join(self.text) + "".join(c.all_text() for c in self.children)


class Tree(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.cur = self.root
        self.errors = []

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if self.cur.tag != tag:
            self.errors.append(f"</{tag}> closes <{self.cur.tag}>")
            return
        self.cur = self.cur.parent

    def handle_data(self, data):
        self.cur.text.append(data)


def parse(text: str) -> Node:
    t = Tree()
    t.feed(text)
    t.close()
    assert not t.errors, t.errors[:5]
    assert t.cur is t.root, f"unclosed <{t.cur.tag}>"
    return t.root


# --------------------------------------------------------------------------
# fixtures: the real pipeline, once per module

@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    rc = cli.main(["compress", str(MODEL), "--domain", str(DOMAIN), "-o", str(out)])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def docs(out_dir):
    report = json.loads((out_dir / "report.json").read_text())
    cert = json.loads((out_dir / "proofs" / "certificate.json").read_text())
    return report, cert


@pytest.fixture(scope="module")
def api_report():
    from leo_verify.compressor import compress
    return compress(str(MODEL), str(DOMAIN), certify_options={"fuzz_points": 2000}).report


def not_certified(report: dict) -> dict:
    """The report with its verdict flipped: one stability obligation left open."""
    r = copy.deepcopy(report)
    ob = next(o for o in r["obligations"] if o["kind"] == "stability")
    ob["status"] = "open"
    ob["detail"] = "branch-and-bound budget exhausted <b>after 2000 nodes</b>"
    c = r["certificate"]
    c["verdict"] = "not certified"
    c["obligations"]["proven"] -= 1
    c["obligations"]["open"] += 1
    c["open"] = [{"id": ob["id"], "status": "open", "detail": ob["detail"]}]
    return r


def banner_class(text: str) -> str:
    """"ok" or "bad": the class of the (one) verdict banner."""
    banners = parse(text).find_all("section", id="verdict")
    assert len(banners) == 1
    cls = banners[0].attrs["class"].split()
    assert ("banner-ok" in cls) != ("banner-bad" in cls)
    return "ok" if "banner-ok" in cls else "bad"


def assert_no_network(text: str):
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"\bsrc\s*=", text, re.I)
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    for href in re.findall(r'href="([^"]*)"', text):
        assert href.startswith("#") or href.startswith("proofs/"), href
    assert "url(" not in text


# --------------------------------------------------------------------------
# compress writes the reports

def test_compress_writes_html_and_markdown(out_dir, docs):
    report, cert = docs
    html_text = (out_dir / "report.html").read_text(encoding="utf-8")
    md_text = (out_dir / "report.md").read_text(encoding="utf-8")
    # exactly what rendering report.json + certificate.json gives (deterministic)
    assert html_text == render_html(report, cert)
    assert md_text == render_markdown(report, cert)
    assert render_html(report, cert) == render_html(copy.deepcopy(report), copy.deepcopy(cert))


def test_html_structure_certified(out_dir, docs):
    report, cert = docs
    text = (out_dir / "report.html").read_text(encoding="utf-8")
    root = parse(text)
    assert text.startswith("<!DOCTYPE html>")
    assert_no_network(text)
    # the verdict banner
    banner = root.find_all("section", id="verdict")
    assert len(banner) == 1 and "banner-ok" in banner[0].attrs["class"]
    assert "CERTIFIED" in banner[0].all_text() and "NOT CERTIFIED" not in text
    # title: file name and sha256
    h1 = root.find_all("h1")[0].all_text()
    assert "tiny_mlp.onnx" in h1
    assert report["model"]["sha256"] in text
    # one stability chart per hidden layer, with a bar per status summing to the layer's width
    layers = [row["layer"] for row in report["before"]["layers"]]
    charts = root.find_all("svg", class_="layer-chart")
    assert [c.attrs["data-layer"] for c in charts] == layers
    for chart in charts:
        layer = chart.attrs["data-layer"]
        segs = {r.attrs["data-kind"]: int(r.attrs["data-count"]) for r in chart.find_all("rect")
                if "data-kind" in r.attrs}
        want = {k: v for k, v in report["facts"]["by_layer"][layer].items() if v}
        assert segs == want
        kept = [r for r in chart.find_all("rect") if "data-kept" in r.attrs]
        after = {row["layer"]: row["neurons"] for row in report["after"]["layers"]}
        assert int(kept[0].attrs["data-kept"]) == after[layer]
    # legend
    legend = root.find_all("div", class_="legend")[0].all_text()
    for word in ("stably active", "stably inactive", "unstable", "unknown"):
        assert word in legend
    # architecture diagram: before / after widths per layer
    arch = root.find_all("svg", class_="arch-chart")
    assert len(arch) == 1
    widths = [int(r.attrs["data-width"]) for r in arch[0].find_all("rect") if "data-width" in r.attrs]
    assert widths == [w for pair in zip(report["before"]["widths"], report["after"]["widths"]) for w in pair]
    # every obligation, in a table grouped per kind
    ids = {n.all_text() for n in root.find_all("code")}
    for ob in report["obligations"]:
        assert ob["id"] in ids
    kinds = [d.attrs["data-kind"] for d in root.find_all("details", class_="kind")]
    assert kinds == ["stability", "rewrite", "rounding", "deviation", "fuzz"]
    # eps (exact and float), fuzz, smt index, hashes, versions, passes, timings
    eps = report["certificate"]["epsilon"]["compressed.onnx"]
    eps_table = root.find_all("table", class_="eps")[0].all_text()
    assert eps["exact"] in eps_table and repr(eps["float"]) in eps_table
    assert str(report["certificate"]["fuzz"]["compressed.onnx"]["points"]) in text
    smt = root.find_all("table", class_="smt")
    assert cert["smt2"], "the tiny example has a branch-and-bound claim with an SMT-LIB file"
    for e in cert["smt2"]:
        assert e["file"] in smt[0].all_text() and e["obligation"] in smt[0].all_text()
        assert (out_dir / "proofs" / e["file"]).exists()
    assert report["outputs"]["onnx"]["sha256"] in root.find_all("table", class_="hashes")[0].all_text()
    assert report["versions"]["highs"] in text
    passes = root.find_all("table", class_="passes")[0].all_text()
    for p in report["passes"]:
        assert p["action"] in passes and p["layer"] in passes
    for k, v in report["timings"].items():
        assert f"<tr><th>{k}</th><td>{v:.3f} s</td></tr>" in text


def test_markdown_certified(out_dir, docs):
    report, _ = docs
    md = (out_dir / "report.md").read_text(encoding="utf-8")
    first = md.splitlines()[0]
    assert first.startswith("# leo-verify: CERTIFIED") and "tiny_mlp.onnx" in first
    assert "| neurons | 16 | 11 | 5 |" in md
    assert "| parameters | 130 | 77 | 53 |" in md
    c = report["certificate"]["obligations"]
    assert f"| **all** | **{c['total']}** | **{c['proven']}** | **{c['passed']}** | **0** | **0** |" in md
    assert "| `compressed.onnx` | `0` | 0.0 |" in md
    assert "## Open or refuted obligations\n\nNone." in md
    assert "| analysis |" in md and "| certification: total |" in md


def test_api_report_without_certificate_file(api_report):
    # the Result.report of the Python API renders on its own (no proofs folder)
    text = render_html(api_report)
    root = parse(text)
    assert_no_network(text)
    assert banner_class(text) == "ok"
    assert len(root.find_all("svg", class_="layer-chart")) == api_report["before"]["hidden_layers"]
    for ob in api_report["obligations"]:
        assert ob["id"] in text
    assert "proofs/certificate.json was not available" in text
    assert render_markdown(api_report).startswith("# leo-verify: CERTIFIED")


# --------------------------------------------------------------------------
# not certified

def _without_not_certified(text: str) -> str:
    return text.replace("NOT CERTIFIED", "").replace("not certified", "")


@pytest.mark.parametrize("with_cert", [False, True])
def test_not_certified_red_banner(docs, with_cert):
    report, cert = docs
    bad = not_certified(report)
    c2 = copy.deepcopy(cert)
    if with_cert:
        c2["verdict"] = "not certified"
        c2["obligations"] = bad["obligations"]
    text = render_html(bad, c2 if with_cert else None)
    root = parse(text)
    assert_no_network(text)
    banner = root.find_all("section", id="verdict")[0]
    assert banner_class(text) == "bad" and 'class="banner banner-ok"' not in text
    assert "NOT CERTIFIED" in banner.all_text()
    open_id = bad["certificate"]["open"][0]["id"]
    assert open_id in banner.all_text()
    assert "budget exhausted" in banner.all_text()
    assert "<b>after 2000 nodes</b>" not in text and "&lt;b&gt;after 2000 nodes&lt;/b&gt;" in text
    # never CERTIFIED outside NOT CERTIFIED (any case)
    assert "CERTIFIED" not in _without_not_certified(text)
    assert not re.search(r"certified", _without_not_certified(text), re.I)
    md = render_markdown(bad, c2 if with_cert else None)
    assert md.startswith("# leo-verify: NOT CERTIFIED")
    assert "CERTIFIED" not in _without_not_certified(md)
    assert f"- **open** `{open_id}`" in md


def test_inconsistent_report_is_not_certified(docs):
    """Verdict 'certified' but a refuted obligation listed / another model's certificate: red."""
    report, cert = docs
    r = copy.deepcopy(report)
    r["obligations"][-1]["status"] = "refuted"
    r["obligations"][-1]["detail"] = "COUNTEREXAMPLE: at x = [0.5]"
    text = render_html(r, cert)
    assert banner_class(text) == "bad" and "CERTIFIED" not in _without_not_certified(text)
    assert "COUNTEREXAMPLE" in parse(text).find_all("section", id="verdict")[0].all_text()
    c2 = copy.deepcopy(cert)
    c2["original"]["sha256"] = "0" * 64
    text = render_html(report, c2)
    assert banner_class(text) == "bad" and "another model" in text
    assert render_markdown(report, c2).startswith("# leo-verify: NOT CERTIFIED")


def test_escaping(docs):
    report, cert = docs
    r = copy.deepcopy(report)
    evil = '/tmp/<script>alert("x")</script>&.onnx'
    r["model"]["source"] = evil
    r["domain"]["source"] = "<img src=x onerror=alert(1)>"
    r["passes"][0]["layer"] = "<i>layer</i>"
    r["obligations"][0]["statement"] = "a < b & c > d \"q\""
    text = render_html(r, cert)
    parse(text)
    assert "<script" not in text and "<img" not in text and "<i>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;.onnx" in text
    assert "a &lt; b &amp; c &gt; d &quot;q&quot;" in text
    md = render_markdown(r, cert)
    # in Markdown the name is only ever inside a code span
    for line in md.splitlines():
        assert "<script" not in re.sub(r"(`+).*?\1", "", line)
    assert "<img" not in re.sub(r"(`+).*?\1", "", md)


def test_many_obligations_collapse(docs):
    report, cert = docs
    r = copy.deepcopy(report)
    stab = [o for o in r["obligations"] if o["kind"] == "stability"]
    extra = [dict(stab[0], id=f"stability:big[{i}]") for i in range(60)]
    r["obligations"] = extra + r["obligations"]
    r["certificate"]["obligations"]["total"] += 60
    r["certificate"]["obligations"]["proven"] += 60
    root = parse(render_html(r, cert))
    kinds = {d.attrs["data-kind"]: d for d in root.find_all("details", class_="kind")}
    assert "open" not in kinds["stability"].attrs  # 67 proven: collapsed
    assert "open" in kinds["rewrite"].attrs
    assert len(kinds["stability"].find_all("tr")) == 1 + 67
    assert "stability:big[59]" in kinds["stability"].all_text()


def test_minimal_report_renders():
    """Missing sections do not crash the renderers (hand-written / older reports)."""
    r = {"schema": "leo_verify.report/1", "certificate": {"verdict": "not certified"}}
    text = render_html(r)
    parse(text)
    assert "NOT CERTIFIED" in text
    assert render_markdown(r).startswith("# leo-verify: NOT CERTIFIED")


# --------------------------------------------------------------------------
# leo-verify report OUT/

def test_report_command(out_dir, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(out_dir, out)
    (out / "report.html").unlink()
    (out / "report.md").unlink()
    rc = cli.main(["report", str(out)])
    printed = capsys.readouterr().out.split()
    assert rc == 0
    assert printed == [str(out / "report.html"), str(out / "report.md")]
    assert (out / "report.html").read_bytes() == (out_dir / "report.html").read_bytes()
    assert (out / "report.md").read_bytes() == (out_dir / "report.md").read_bytes()
    assert write_reports(str(out)) == (str(out / "report.html"), str(out / "report.md"))


def _one_line_error(capsys, argv, code):
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == code, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("leo-verify: error:"), err
    return err


def test_report_command_errors(tmp_path, capsys):
    err = _one_line_error(capsys, ["report", str(tmp_path)], InputFileError.exit_code)
    assert "report.json" in err and "does not exist" in err
    _one_line_error(capsys, ["report", str(tmp_path / "nope")], InputFileError.exit_code)
    (tmp_path / "report.json").write_text("{not json")
    _one_line_error(capsys, ["report", str(tmp_path)], DataError.exit_code)
    (tmp_path / "report.json").write_text("[1, 2]")
    _one_line_error(capsys, ["report", str(tmp_path)], DataError.exit_code)
    (tmp_path / "report.json").write_text('{"schema": "something else"}')
    err = _one_line_error(capsys, ["report", str(tmp_path)], DataError.exit_code)
    assert "schema" in err
    (tmp_path / "report.json").write_text('{"schema": "leo_verify.report/1", "before": 5, "passes": {"a": 1}}')
    assert cli.main(["report", str(tmp_path)]) == 0


def test_no_certify_ignores_stale_certificate(out_dir, tmp_path, capsys):
    out = tmp_path / "stale"
    shutil.copytree(out_dir, out)  # a certified run's proofs/ are still there
    rc = cli.main(["compress", str(MODEL), "--domain", str(DOMAIN), "-o", str(out), "--no-certify"])
    capsys.readouterr()
    assert rc == 0
    text = (out / "report.html").read_text(encoding="utf-8")
    assert banner_class(text) == "bad" and "certification not run" in text
    assert "proofs/certificate.json was not available" in text
    assert (out / "report.md").read_text().startswith("# leo-verify: NOT CERTIFIED")


BENCH_OUT = ROOT / "out" / "certify"


@pytest.mark.skipif(not BENCH_OUT.is_dir(), reason="examples/certify_benchmarks.py outputs not present")
def test_benchmark_outputs_render():
    dirs = sorted(p for p in BENCH_OUT.iterdir() if (p / "report.json").exists())
    if not dirs:
        pytest.skip("no benchmark outputs")
    from leo_verify.report import read_certificate, read_report
    for d in dirs[:2]:
        report = read_report(str(d))
        cert = read_certificate(str(d), report)
        text = render_html(report, cert)
        root = parse(text)
        assert_no_network(text)
        assert len(root.find_all("svg", class_="layer-chart")) == report["before"]["hidden_layers"]
        for ob in report["obligations"]:
            assert ob["id"] in text


# --------------------------------------------------------------------------
# a real browser, when there is one

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def test_headless_browser_dom(out_dir, tmp_path):
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        pytest.skip(f"no headless browser on PATH (looked for {', '.join(BROWSERS)}); "
                    "the structural HTML tests above still ran")
    page = out_dir / "report.html"
    cmd = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom",
           f"--user-data-dir={tmp_path / 'profile'}", page.as_uri()]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "HOME": str(tmp_path)})
    except subprocess.TimeoutExpired:
        pytest.fail("the headless browser did not finish within 120 s")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert "CERTIFIED" in dom and 'class="banner banner-ok"' in dom
    assert dom.count('class="layer-chart"') == 2
    assert "<svg" in dom and "<rect" in dom
    shot = tmp_path / "shot.png"
    res = subprocess.run([exe, "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
                          "--window-size=1200,2000", f"--user-data-dir={tmp_path / 'profile2'}", page.as_uri()],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 1000
