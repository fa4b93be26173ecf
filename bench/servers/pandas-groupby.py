#!/usr/bin/env python3
"""A data-frame job, for bench/servers.json: a 3-million-row frame grouped, joined to a lookup
table and sorted, again and again, a tenth of a column rewritten each pass, until killed.
Needs pandas (Debian: python3-pandas, for /usr/bin/python3)."""
import numpy as np
import pandas as pd

rng = np.random.default_rng(1)
n = 3_000_000
df = pd.DataFrame({'k': rng.integers(0, 50_000, n), 'v': rng.random(n), 'w': rng.integers(0, 1000, n)})
lookup = pd.DataFrame({'k': np.arange(50_000), 'name': rng.integers(0, 100, 50_000)})
out = []
while True:
    g = df.groupby('k', sort=False).agg(v=('v', 'sum'), w=('w', 'max')).reset_index()
    j = g.merge(lookup, on='k').sort_values('v')
    out.append(j.head(10))
    out = out[-20:]
    idx = rng.integers(0, n, n // 10)
    df.loc[idx, 'v'] = rng.random(len(idx))
