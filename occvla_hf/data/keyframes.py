"""QA rows joined with their keyframe's camera columns, by `sample_token`.

The `qa` config stores no image: a keyframe's six images (and its camera calibration) are stored once, in its row
of the `IMAGES_CONFIG` (`planning`) config of the same split, and a question reads them from there:

    planning = load_dataset(PATH, "planning", split="mini_val")
    qa = join_keyframes(load_dataset(PATH, "qa", split="mini_val"), planning)
    qa[0]["images"]  # the 6 images of the question's keyframe, those of its planning row

`join_keyframes` returns a view of the rows (`Dataset.with_transform`): the joined columns are read from the keyframe
rows on access and never copied, so indexing, slices, `select`, iteration and data loaders see joined rows, while
`column_names` and `features` stay those of the stored rows (and a later `with_format` drops the join). Every sample
token is checked when joining: a question whose keyframe has no row is a ValueError naming its sample_token. Rows
that hold the columns already (QA rows of builds from before the join stored each keyframe's images in every
question) come back unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from datasets import Dataset

from occvla_hf.data.schema import CAMERA_COLUMNS, IMAGES_CONFIG

IMAGE_COLUMN: str = "images"


class KeyframeColumns:
    """Camera columns of keyframe rows by sample token; called on a column batch (the `with_transform` of
    `join_keyframes`), it adds those columns to it."""

    def __init__(self, keyframes: Dataset, columns: Sequence[str] = (IMAGE_COLUMN,)) -> None:
        unknown = [name for name in columns if name not in CAMERA_COLUMNS]
        if unknown or not columns:
            raise ValueError(f"columns: expected a non-empty subset of {CAMERA_COLUMNS}, got {list(columns)}")
        missing = [name for name in ("sample_token", *columns) if name not in keyframes.column_names]
        if missing:
            raise ValueError(
                f"keyframes: no {missing} columns (expected rows of the {IMAGES_CONFIG!r} config, which hold "
                f"{list(CAMERA_COLUMNS)}; found {keyframes.column_names})"
            )
        self.columns = tuple(columns)
        self.keyframes = keyframes.select_columns(list(self.columns))  # no other column is decoded
        self.rows: dict[str, int] = {}
        for row, token in enumerate(keyframes["sample_token"]):
            self.rows.setdefault(token, row)

    def check(self, sample_tokens: Iterable[str], where: str) -> None:
        """ValueError naming the first of `sample_tokens` without a keyframe row (`where`: whose tokens they are)."""
        missing = [token for token in dict.fromkeys(sample_tokens) if token not in self.rows]
        if missing:
            raise ValueError(
                f"{where}: no {IMAGES_CONFIG} row holds the keyframe of sample_token {missing[0]!r} ({len(missing)} "
                f"keyframes missing); join rows with the {IMAGES_CONFIG} rows of the same split"
            )

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        joined = self.keyframes[[self.rows[token] for token in batch["sample_token"]]]
        return {**batch, **joined}


def join_keyframes(
    rows: Dataset, keyframes: Dataset, columns: Sequence[str] = (IMAGE_COLUMN,), where: str = "rows"
) -> Dataset:
    """`rows` (e.g. of the `qa` config) with the `columns` of their keyframe's row in `keyframes` (the `planning`
    rows of the same split), joined by `sample_token` (module docstring); `rows` themselves when they hold the
    columns already. ValueError naming the first sample_token that `keyframes` does not hold (`where` names the
    rows in the message)."""
    missing = [name for name in columns if name not in rows.column_names]
    if not missing:
        return rows
    lookup = KeyframeColumns(keyframes, missing)
    lookup.check(rows["sample_token"], where)
    return rows.with_transform(lookup)


def has_images(rows: Dataset) -> bool:
    """Whether rows come with their images: stored, or joined (`join_keyframes`)."""
    return IMAGE_COLUMN in rows.column_names or (len(rows) > 0 and IMAGE_COLUMN in rows[0])


def require_images(rows: Dataset, where: str) -> None:
    """ValueError for rows without images (`where` names them): QA rows must be joined with their keyframes first."""
    if not has_images(rows):
        raise ValueError(
            f"{where}: the rows hold no images (columns {rows.column_names}); QA rows take them from their "
            f"keyframe's {IMAGES_CONFIG} row: occvla_hf.data.join_keyframes(rows, {IMAGES_CONFIG}_rows), or "
            f"occvla_hf.data.load_split(source, 'qa', split)"
        )


__all__ = ["IMAGE_COLUMN", "KeyframeColumns", "has_images", "join_keyframes", "require_images"]
