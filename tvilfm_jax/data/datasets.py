"""The dataset registry: the three benchmarks' names, cameras, trials and default protocols.

Every module that needs to know which datasets exist reads it here (layout readers, synthetic
writer, TFDS builders, text generation, evaluator, configs):

    layout         display     TFDS name                  RegDB split
    "sysu"         SYSU-MM01   sysu_mm01                  -
    "regdb"        RegDB       regdb/trial1 .. trial10    1..10
    "llcm"         LLCM        llcm                       -
    (any)                      synthetic/<layout>[_tiny]  1 (RegDB records hold split 1)
    "regdb"                    synthetic/regdb[_tiny]_trial<t>  2..10

Cameras (docs/original.md §5.1, §6.4-6.6): SYSU-MM01 RGB cams 1, 2, 4, 5 and IR cams 3, 6 (cams 1-3
indoors); LLCM VIS cams 1-9 and NIR cams 1, 2, 4-9 (test_nir has no cam3); RegDB has no
camera ids, the original's metric gets 1 (thermal queries) and 2 (visible gallery).
"""

from __future__ import annotations

LAYOUTS = ("sysu", "regdb", "llcm")
DISPLAY_NAMES = {"sysu": "SYSU-MM01", "regdb": "RegDB", "llcm": "LLCM"}
#: The TFDS dataset name of each layout's builder (tfds_builders/<name>/); RegDB adds "/trial<t>".
TFDS_NAMES = {"sysu": "sysu_mm01", "regdb": "regdb", "llcm": "llcm"}
SYNTHETIC_PREFIX = "synthetic/"
#: The RegDB split the synthetic RegDB records hold unless their name says another (a synthetic
#: tree writes the split files of several splits, starting at 1; `synthetic_config_name`).
SYNTHETIC_REGDB_TRIAL = 1
_SYNTHETIC_TRIAL_INFIX = "_trial"
_REGDB_TRIAL_PREFIX = f"{TFDS_NAMES['regdb']}/trial"

SYSU_RGB_CAMS = (1, 2, 4, 5)
SYSU_IR_CAMS = (3, 6)
SYSU_INDOOR_CAMS = (1, 2, 3)
#: SYSU-MM01 gallery modes: the RGB cameras of all-search and indoor-search.
SYSU_GALLERY_CAMS = {"all": SYSU_RGB_CAMS, "indoor": (1, 2)}
SYSU_QUERY_CAMS = SYSU_IR_CAMS
LLCM_VIS_CAMS = (1, 2, 3, 4, 5, 6, 7, 8, 9)
LLCM_NIR_CAMS = (1, 2, 4, 5, 6, 7, 8, 9)
LLCM_GALLERY_CAMS = LLCM_VIS_CAMS
LLCM_QUERY_CAMS = LLCM_NIR_CAMS
#: RegDB has no camera ids; the original passes these constants to its metric.
REGDB_QUERY_CAM = 1
REGDB_GALLERY_CAM = 2

#: Gallery trials of the single-shot protocols, and the trained RegDB splits.
GALLERY_TRIALS = tuple(range(10))
REGDB_TRIALS = tuple(range(1, 11))

#: The evaluation protocols (names of the evaluator's `PROTOCOLS`) run on each layout by default.
DEFAULT_PROTOCOLS = {
    "sysu": ("sysu-all", "sysu-indoor"),
    "regdb": ("regdb-t2v", "regdb-v2t"),
    "llcm": ("llcm-i2v", "llcm-v2i"),
}


def check_layout(layout: str, what: str = "layout") -> str:
    """`layout` if it names a registered layout, else a ValueError naming `what`."""
    if layout not in LAYOUTS:
        raise ValueError(f"{what} must be one of {LAYOUTS}, got {layout!r}")
    return layout


def synthetic_trial(layout: str) -> int | None:
    """The RegDB split a synthetic dataset of `layout` holds (None for SYSU-MM01 and LLCM)."""
    return SYNTHETIC_REGDB_TRIAL if layout == "regdb" else None


def synthetic_config_name(layout: str, trial: int | None = None, tiny: bool = False) -> str:
    """The synthetic TFDS config of a layout: "<layout>[_tiny]", with "_trial<t>" for a RegDB
    split other than SYNTHETIC_REGDB_TRIAL, e.g. "regdb_tiny_trial2"."""
    check_layout(layout)
    if trial is not None and (layout != "regdb" or trial not in REGDB_TRIALS):
        raise ValueError(f"synthetic {layout}: trial={trial!r}; only RegDB has splits, {REGDB_TRIALS[0]}.."
                         f"{REGDB_TRIALS[-1]}")
    name = layout + ("_tiny" if tiny else "")
    return name if trial in (None, SYNTHETIC_REGDB_TRIAL) else f"{name}{_SYNTHETIC_TRIAL_INFIX}{trial}"


def layout_of(name: str) -> tuple[str, int | None]:
    """(layout, RegDB trial) of a TFDS dataset name: "sysu_mm01", "regdb/trial3", "llcm",
    "synthetic/<layout>[_tiny]" (synthetic RegDB records hold split 1), "synthetic/regdb[_tiny]_trial<t>";
    a ":<version>" is ignored."""
    base = name.split(":")[0]
    if base.startswith(SYNTHETIC_PREFIX):
        config = base[len(SYNTHETIC_PREFIX):]
        layout = config.split("_")[0]
        _, infix, trial = config.rpartition(_SYNTHETIC_TRIAL_INFIX)
        if layout == "regdb" and infix and trial.isdigit():
            return layout, int(trial)
        if layout in LAYOUTS:
            return layout, synthetic_trial(layout)
    elif base == TFDS_NAMES["sysu"]:
        return "sysu", None
    elif base == TFDS_NAMES["llcm"]:
        return "llcm", None
    elif base.startswith(_REGDB_TRIAL_PREFIX) and base[len(_REGDB_TRIAL_PREFIX):].isdigit():
        return "regdb", int(base[len(_REGDB_TRIAL_PREFIX):])
    raise ValueError(f"config.data.name={name!r}: cannot tell the dataset layout; expected sysu_mm01, "
                     "regdb/trial<N>, llcm or synthetic/<sysu|regdb|llcm>")


def regdb_config_name(trial: int) -> str:
    """The TFDS config of one RegDB split: "trial<t>"."""
    return f"trial{trial}"


def tfds_name(layout: str, trial: int | None = None) -> str:
    """The TFDS dataset of a real layout: "sysu_mm01", "regdb/trial<t>" (needs `trial`), "llcm"."""
    check_layout(layout)
    if (trial is None) != (layout != "regdb"):
        raise ValueError(f"{layout}: trial={trial!r}; RegDB needs one of {REGDB_TRIALS}, the others none")
    return TFDS_NAMES[layout] if trial is None else f"{TFDS_NAMES[layout]}/{regdb_config_name(trial)}"
