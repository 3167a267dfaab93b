// MathJax 3 configuration (MathJax itself is served by the site: js/vendor/mathjax, see
// `make docs-assets`). Two kinds of containers are typeset, and nothing else:
//   .arithmatex           pymdownx.arithmatex "generic" output on the Markdown pages;
//   .jp-RenderedMarkdown  Markdown cells of the notebooks rendered by mkdocs-jupyter ($...$);
//   the page's table of contents, whose entries repeat the headings' \\(...\\) as text.
// Code (pre, code) inside them is skipped by MathJax's default skipHtmlTags.
const MATH_CONTAINERS = ".arithmatex, .jp-RenderedMarkdown, .md-nav--secondary .md-nav__link";

window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  startup: {
    // Typeset only the containers above (an empty list typesets nothing).
    elements: [MATH_CONTAINERS],
  },
};

// Re-typeset after Material's instant navigation swaps the page.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      if (MathJax.startup.output.clearCache) MathJax.startup.output.clearCache(); // CHTML only
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise(Array.from(document.querySelectorAll(MATH_CONTAINERS)));
    }
  });
}
