"""Hidden cases of lab 3."""

from grader.spec import Case, randn, rng

_r = rng(3001)

HIDDEN = {
    "max_pool": [
        Case("hidden: (9, 9, 3) window 3 stride 3", (randn(_r, 9, 9, 3),), {"window": 3}),
        Case("hidden: all negative, window 3 stride 2 pad 1", (-abs(randn(_r, 5, 5, 1)) - 5,),
             {"window": 3, "stride": 2, "padding": 1}),
    ],
    "avg_pool": [
        Case("hidden: (7, 7, 2) window 3 stride 2 pad 1", (randn(_r, 7, 7, 2),),
             {"window": 3, "stride": 2, "padding": 1}),
    ],
}
