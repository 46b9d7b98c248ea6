"""The panel's look: plain CSS scoped to its own class names, no script."""

# Plain CSS (no script) that turns the row buttons into an aligned, left-justified table.
# Scoped to the panel's own class names; ipywidgets 8 renders these classes in
# JupyterLab 4 and Notebook 7 alike.
CSS = """<style>
.nbc-panel { font-size: 12px; }
.nbc-panel .nbc-mono, .nbc-panel .nbc-history button, .nbc-panel .nbc-vars select {
  font-family: var(--jp-code-font-family, monospace); font-size: 12px;
}
.nbc-panel .nbc-cols { white-space: pre; padding: 0 8px; opacity: 0.7; overflow: hidden; }
.nbc-panel .nbc-vcols .nbc-cols { padding: 0 5px; }
.nbc-panel .nbc-history { flex-direction: column; align-items: stretch; }
.nbc-panel .nbc-history button {
  white-space: pre; text-align: left; justify-content: flex-start; width: 100% !important;
  margin: 0 !important; height: 22px; line-height: 22px; padding: 0 8px; border-radius: 0;
  overflow: hidden; text-overflow: ellipsis; display: block;
}
.nbc-panel .nbc-history button.mod-active { font-weight: 600; }
.nbc-panel .nbc-error { color: var(--jp-error-color1, #c62828); }
.nbc-panel .nbc-ok { color: var(--jp-success-color1, #2e7d32); }
.nbc-panel .nbc-warn { color: var(--jp-warn-color1, #b26a00); }
.nbc-panel .nbc-banner {
  background: var(--jp-warn-color3, #fff3e0); border-left: 3px solid var(--jp-warn-color1, #b26a00);
  padding: 2px 6px; align-items: center;
}
.nbc-panel .nbc-confirm {
  background: var(--jp-layout-color2, #eee); padding: 2px 6px; align-items: center;
}
.nbc-panel .nbc-details ul { margin: 2px 0; padding-left: 18px; }
/* Narrow outputs (about 400 px; Notebook 7, a side-by-side view): action buttons wrap onto
   more lines instead of shrinking to "Rest..."; texts wrap, even long store paths. */
.nbc-panel .widget-hbox { flex-wrap: wrap; gap: 2px; }
.nbc-panel .widget-hbox > .jupyter-button {
  flex: 0 0 auto; width: auto !important; max-width: 100%; overflow: visible; margin: 0;
}
.nbc-panel .widget-hbox > .widget-html { flex: 1 1 12em; min-width: 0; }
.nbc-panel .widget-html-content { overflow-wrap: anywhere; line-height: 1.5; }
/* A table (header + rows) keeps its columns whole and scrolls sideways as one, so the
   titles stay over their columns (no script needed). */
.nbc-panel .nbc-table { overflow-x: auto; overflow-y: hidden; }
.nbc-panel .nbc-table > .widget-html, .nbc-panel .nbc-table > .nbc-history,
.nbc-panel .nbc-table > .nbc-vars { width: max-content !important; min-width: 100%; }
.nbc-panel .nbc-table .nbc-cols { overflow: visible; }
.nbc-panel .nbc-table .nbc-vars select { width: auto !important; min-width: 100%; }
</style>"""
