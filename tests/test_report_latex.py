"""``emoplug report --format latex``: booktabs tables that compile as written (compiled when a
TeX engine is installed, their structure checked always)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from test_report import make_run

from emoplug.cli import main
from emoplug.report import write_report
from emoplug.report.latex import escape, leading_number


@pytest.fixture(scope="module")
def latex(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("latex"))
    return write_report(run, run / "report", ["latex"])["latex"]


def tables(text: str) -> list[str]:
    return re.findall(r"\\begin\{table\}.*?\\end\{table\}", text, flags=re.S)


def test_escape_turns_the_report_symbols_into_latex():
    assert escape("bert_ms[staged]+mfcc/early 100% & more #1") == \
        r"bert\_ms[staged]+mfcc/early 100\% \& more \#1"
    assert escape("71.2 ± 1.5") == r"71.2 $\pm$ 1.5"
    assert escape("A − B [95% CI] — 4/6 † ≥ 6 <0.001") == \
        r"A $-$ B [95\% CI] --- 4/6 \dag{} $\geq$ 6 \textless{}0.001"
    assert escape("Nadeau–Bengio sd²·(1/n)") == r"Nadeau--Bengio sd$^2$$\cdot$(1/n)"
    assert escape("café") == "cafe"
    assert leading_number("71.2 ± 1.5") == 71.2 and leading_number("+2.3 [0.4, 4.2]") == 2.3


def test_each_table_is_booktabs_with_a_footnote(latex):
    files = sorted(p.name for p in latex.glob("*.tex"))
    assert {"results.tex", "modality.tex", "approach.tex", "text_encoders.tex",
            "report_tables.tex"} <= set(files)
    assert "missing.tex" not in files and "compute.tex" not in files  # diagnostics
    for path in latex.glob("*.tex"):
        text = path.read_text()
        assert text.isascii(), path.name
        assert text.count("{") - text.count(r"\{") == text.count("}") - text.count(r"\}")
        if path.name == "report_tables.tex":
            continue
        found = tables(text)
        assert found, path.name
        for table in found:
            assert table.count(r"\toprule") == table.count(r"\bottomrule") == 1
            assert r"\midrule" in table and r"\caption{" in table and r"\label{tab:" in table
            assert r"\footnotesize" in table
            body = table[table.index(r"\toprule"):table.index(r"\bottomrule")]
            # no unescaped special character in the cells
            assert not re.search(r"(?<!\\)[_%#$]", re.sub(r"\$\\[a-z]+\$|\$[-^]\S*?\$", "",
                                                           body)), body
            widths = {line.count(" & ") for line in body.splitlines() if line.endswith(r"\\")}
            assert len(widths) == 1, path.name  # every row has the header's columns
    document = (latex / "report_tables.tex").read_text()
    assert r"\usepackage{booktabs}" in document and r"\input{results}" in document


def test_the_best_value_of_a_column_is_bold_and_the_footnote_names_n_and_the_test(latex):
    results = tables((latex / "results.tex").read_text())[0]
    header = next(line for line in results.splitlines() if line.startswith("Cell & "))
    ua = header.removesuffix(r" \\").split(" & ").index("UA")
    rows = [line.removesuffix(r" \\").split(" & ") for line in results.splitlines()
            if line.endswith(r"\\") and not line.startswith("Cell & ")]
    cells = [r for r in rows if not r[0].startswith("Majority-class floor")]
    values = [leading_number(re.sub(r"\\textbf\{", "", r[ua])) for r in cells]
    bold = [r[ua].startswith(r"\textbf{") for r in cells]
    assert bold == [v == max(values) for v in values] and sum(bold) == 1
    floor = next(r for r in rows if r[0].startswith("Majority-class floor"))
    assert r"\textbf" not in " ".join(floor)  # a reference row is never "best"
    assert r"{\textbf{" not in results  # the value is wrapped, not its cell
    assert "n = folds" in results and "mean $\\pm$ sample std" in results
    approach = (latex / "approach.tex").read_text()
    assert "Nadeau--Bengio corrected resampled t-test" in approach
    assert "n counts folds" in approach and "Holm" in approach


def test_the_tables_compile_as_written(latex, tmp_path):
    """Compiled with pdflatex where a TeX engine is installed; without one (the suite installs
    none), the document's structure is checked instead: balanced braces and environments,
    every package it needs loaded."""
    import re

    document = (latex / "report_tables.tex").read_text()
    if shutil.which("pdflatex") is None:
        assert document.count("{") - document.count("\\{") == \
            document.count("}") - document.count("\\}")
        opened = re.findall(r"\\begin\{(\w+)\}", document)
        closed = re.findall(r"\\end\{(\w+)\}", document)
        assert sorted(opened) == sorted(closed) and "document" in opened
        assert "\\usepackage{booktabs}" in document
        return
    folder = shutil.copytree(latex, tmp_path / "latex")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                           "report_tables.tex"], cwd=folder, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (folder / "report_tables.pdf").stat().st_size > 0


def test_cli_latex_and_stats_flags(tmp_path):
    run = make_run(tmp_path)
    result = CliRunner().invoke(main, ["report", str(run), "--format", "latex,md",
                                       "--stats", "plain", "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"latex: {tmp_path / 'out' / 'latex'}" in result.output
    assert "the plain paired t-test" in (tmp_path / "out" / "latex" / "approach.tex").read_text()
    bad = CliRunner().invoke(main, ["report", str(run), "--stats", "exact"])
    assert bad.exit_code == 2 and "'exact' is not one of 'corrected', 'plain'" in bad.output
