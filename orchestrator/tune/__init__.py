"""`orch tune`, the accuracy guard and tuned layouts.

- ``guard``: fp32 accuracy records and the bert-99 / bert-99.9 verdict of a reduced precision;
- ``layout``: the stored best layout per system and node profile;
- ``sweep``: the pruned search over layouts (plain functions, measuring injected);
- ``run``: the sweep run with `orch bench` trials, locally or on an inventory;
- ``apply``: what `orch bench` takes from all this (layout defaults, model variant).
"""
