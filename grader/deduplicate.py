"""nbgrader's ``DeduplicateIds``, without the crash it leads to.

When a learner copies a cell, two cells carry one ``grade_id``. nbgrader keeps the
last and empties the metadata of the others (``nbgrader = {}``), and then
``OverwriteCells.add_missing_cells`` fails on those empty entries (``KeyError:
'grade_id'``): the whole submission scores 0. This preprocessor removes the empty
entry, so the copies become plain cells and the notebook is graded as usual.
"""

from __future__ import annotations

from nbgrader.preprocessors import DeduplicateIds


class DeduplicateCells(DeduplicateIds):
    """Keep the last cell of each grade_id; the earlier copies become plain cells."""

    def preprocess_cell(self, cell, resources, cell_index):
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.metadata.get("nbgrader") == {}:
            del cell.metadata["nbgrader"]
        return cell, resources
