"""Tables, figures, paired differences, the paper comparison, imports and the export, from per-image results.

One module per concern (all free of PyTorch):

=================  =====================================================================================
``load``           reading result TSVs (ours and imported): columns, empty radii, vote counts, directories
``imports``        foreign formats in: Cohen et al.'s logs, the official DensePure code's label files
``spec``           artifact specs: panels, image sets, radii
``accuracy``       certified accuracy at radii (the reference's 3-significant-digit rule), setting selection
``intervals``      Clopper-Pearson, Wilson, Newcombe (paired, independent), McNemar, Fisher, Holm, Poisson-binomial
``montecarlo``     how a rerun on the same image can differ: rerun probabilities from the votes
``tables``         table artifacts as tidy cells with their per-image rows
``paired``         paired differences between settings on the same images
``layout``         the paper's table layout and the CSV / Markdown / LaTeX / HTML writers
``paper``          the paper's numbers next to the reproduction's, with the right variation
``figures``        certified-accuracy figures with bands, error bars and the paper's points
``export``         one JSON per run for a leaderboard
``theory``         Section 3's artifacts (tables and figures of :mod:`densepure.theory`)
=================  =====================================================================================
"""

from densepure.report.accuracy import (
                        accuracy_rows,
                        certified_accuracy_table,
                        certified_at,
                        max_certifiable_radius,
                        select_rows,
)
from densepure.report.figures import figure_style, panels_figure, save_figure, write_figure
from densepure.report.intervals import (
                        clopper_pearson,
                        fisher_exact,
                        holm,
                        mcnemar_exact,
                        newcombe_independent,
                        newcombe_paired,
                        wilson,
)
from densepure.report.labels import canonical_classifier, classifier_label, classifier_matches, method_label
from densepure.report.layout import table_layout, write_table
from densepure.report.load import SETTING_KEYS, load_results, method_keys, result_files
from densepure.report.paired import paired_table
from densepure.report.paper import compare_with_paper, paper_rows
from densepure.report.spec import default_spec, image_ids, load_spec, panel_kind, resolve_spec
from densepure.report.tables import (
                        PAPER_DIR,
                        TABLES,
                        Table,
                        quoted_baselines,
                        table1,
                        table2,
                        table_a,
                        table_artifact,
                        table_b,
                        table_cells,
)

__all__ = [
    "PAPER_DIR", "SETTING_KEYS", "TABLES", "Table", "accuracy_rows", "canonical_classifier",
    "certified_accuracy_table", "certified_at", "classifier_label", "classifier_matches", "clopper_pearson",
    "compare_with_paper", "default_spec", "figure_style", "fisher_exact", "holm", "image_ids", "load_results",
    "load_spec", "max_certifiable_radius", "mcnemar_exact", "method_keys", "method_label", "newcombe_independent",
    "newcombe_paired", "paired_table", "panel_kind", "panels_figure", "paper_rows", "quoted_baselines",
    "resolve_spec", "result_files", "save_figure", "select_rows", "table1", "table2", "table_a",
    "table_artifact", "table_b", "table_cells", "table_layout", "wilson", "write_figure", "write_table",
]
