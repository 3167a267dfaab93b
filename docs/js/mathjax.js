// MathJax 3 configuration for pymdownx.arithmatex (generic mode), as in mkdocs-material's docs,
// extended to the Markdown cells of notebooks rendered by mkdocs-jupyter ($...$ and $$...$$).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    // Only these elements are typeset: arithmatex output and notebook Markdown cells.
    processHtmlClass: "arithmatex|jp-RenderedMarkdown",
  },
};

// Re-typeset after Material's instant navigation swaps the page.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
