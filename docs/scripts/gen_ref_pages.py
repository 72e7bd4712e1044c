"""Generate the API reference: one page per module of the ``facetorch`` package, found by walking it.

Run by the ``gen-files`` plugin of ``mkdocs build``. The pages hold ``::: facetorch.x.y`` blocks
that mkdocstrings fills from the docstrings by reading the source (griffe's static analysis): no
module is imported, so modules that import optional packages (onnxruntime, litdata, dlib, ...)
document like the others. Moving or adding a module changes the reference with no edit here.
"""

from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "facetorch"

nav = mkdocs_gen_files.Nav()

for path in sorted(PACKAGE.rglob("*.py")):
    module_path = path.relative_to(ROOT).with_suffix("")
    parts = tuple(module_path.parts)
    if any(part.startswith("_") and part != "__init__" for part in parts):
        continue  # private modules (and __main__) are not part of the reference
    doc_path = Path(*parts).with_suffix(".md")
    if parts[-1] == "__init__":
        parts = parts[:-1]
        doc_path = Path(*parts, "index.md")
    nav[parts] = doc_path.as_posix()
    with mkdocs_gen_files.open(Path("reference", doc_path), "w") as page:
        page.write(f"::: {'.'.join(parts)}\n")
    mkdocs_gen_files.set_edit_path(Path("reference", doc_path), path.relative_to(ROOT))

with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as summary:
    summary.writelines(nav.build_literate_nav())
