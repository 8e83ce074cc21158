"""`inpaint review`: check and correct the masks of a `--masks auto` run in the browser.

`serve(OUT, HAND_MASKS)` opens a small local web app over the run's manifest and outputs
(standard library HTTP on 127.0.0.1, a random token, plain HTML/JS/CSS shipped in
`static/`): photos ordered by what most needs a look, each with its mask over it and the
restored result beside it; regions are rejected or accepted by a click, missed damage
painted and false marks erased with a brush. Save writes the corrected mask to the
hand-masks folder, and `inpaint run ... --masks auto --hand-masks HAND_MASKS` redoes
exactly the photos whose masks were saved.
"""

from pipeline.review.items import ReviewError, apply_edits, entries
from pipeline.review.server import Review, ReviewServer, serve

__all__ = ["Review", "ReviewError", "ReviewServer", "apply_edits", "entries", "serve"]
