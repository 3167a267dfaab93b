// Loaded by mkdocs-jupyter in place of its MathJax 2 (`custom_mathjax_url` in mkdocs.yml), so
// that notebook pages use the same MathJax 3 as the rest of the site (docs/js/mathjax.js).
