//! Minimum-cost assignment (the Hungarian method) of tracks to detections.
//!
//! The shortest-augmenting-path form with row and column potentials, `O(n² m)` for an `n × m`
//! matrix with `n ≤ m`; the buffers grow once to the largest problem and are reused.

/// Reusable buffers for [`Assigner::solve`].
#[derive(Debug, Default)]
pub struct Assigner {
    u: Vec<f64>,
    v: Vec<f64>,
    /// `p[j]`: the row (1-based, 0 = none) holding column `j`.
    p: Vec<usize>,
    way: Vec<usize>,
    minv: Vec<f64>,
    used: Vec<bool>,
    cost: Vec<f64>,
}

impl Assigner {
    /// Assigns each of `rows` to a distinct one of `cols` minimising the sum of `cost(r, c)`,
    /// and calls `matched(r, c)` for every pair whose cost is at most `max_cost`.
    pub fn solve(
        &mut self,
        rows: usize,
        cols: usize,
        cost: impl Fn(usize, usize) -> f32,
        max_cost: f32,
        mut matched: impl FnMut(usize, usize),
    ) {
        if rows == 0 || cols == 0 {
            return;
        }
        // The method wants no more rows than columns: solve the transpose otherwise.
        let transposed = rows > cols;
        let (n, m) = if transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        self.cost.clear();
        for i in 0..n {
            for j in 0..m {
                let c = if transposed { cost(j, i) } else { cost(i, j) };
                self.cost.push(f64::from(c));
            }
        }
        let reset = |v: &mut Vec<f64>, len| {
            v.clear();
            v.resize(len, 0.0);
        };
        reset(&mut self.u, n + 1);
        reset(&mut self.v, m + 1);
        self.p.clear();
        self.p.resize(m + 1, 0);
        self.way.clear();
        self.way.resize(m + 1, 0);
        for i in 1..=n {
            self.p[0] = i;
            let mut j0 = 0;
            self.minv.clear();
            self.minv.resize(m + 1, f64::INFINITY);
            self.used.clear();
            self.used.resize(m + 1, false);
            loop {
                self.used[j0] = true;
                let i0 = self.p[j0];
                let (mut delta, mut j1) = (f64::INFINITY, 0);
                for j in 1..=m {
                    if !self.used[j] {
                        let cur = self.cost[(i0 - 1) * m + j - 1] - self.u[i0] - self.v[j];
                        if cur < self.minv[j] {
                            self.minv[j] = cur;
                            self.way[j] = j0;
                        }
                        if self.minv[j] < delta {
                            delta = self.minv[j];
                            j1 = j;
                        }
                    }
                }
                for j in 0..=m {
                    if self.used[j] {
                        self.u[self.p[j]] += delta;
                        self.v[j] -= delta;
                    } else {
                        self.minv[j] -= delta;
                    }
                }
                j0 = j1;
                if self.p[j0] == 0 {
                    break;
                }
            }
            loop {
                let j1 = self.way[j0];
                self.p[j0] = self.p[j1];
                j0 = j1;
                if j0 == 0 {
                    break;
                }
            }
        }
        for j in 1..=m {
            let i = self.p[j];
            if i != 0 && self.cost[(i - 1) * m + j - 1] <= f64::from(max_cost) {
                let (r, c) = if transposed {
                    (j - 1, i - 1)
                } else {
                    (i - 1, j - 1)
                };
                matched(r, c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cheapest assignment by trying every permutation of columns.
    fn brute_force(cost: &[Vec<f32>]) -> f32 {
        fn go(cost: &[Vec<f32>], row: usize, used: &mut Vec<bool>) -> f32 {
            if row == cost.len() {
                return 0.0;
            }
            let mut best = f32::INFINITY;
            for c in 0..used.len() {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[row][c] + go(cost, row + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        go(cost, 0, &mut vec![false; cost[0].len()])
    }

    #[test]
    fn matches_brute_force_on_random_matrices() {
        let mut seed = 0x2545_f491_u32;
        let mut rand = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed % 1000) as f32 / 1000.0
        };
        let mut assigner = Assigner::default();
        for (rows, cols) in [(1, 1), (3, 3), (2, 5), (5, 2), (6, 6), (4, 7)] {
            for _ in 0..20 {
                let cost: Vec<Vec<f32>> = (0..rows)
                    .map(|_| (0..cols).map(|_| rand()).collect())
                    .collect();
                let mut total = 0.0;
                let mut pairs = Vec::new();
                assigner.solve(
                    rows,
                    cols,
                    |r, c| cost[r][c],
                    f32::INFINITY,
                    |r, c| {
                        total += cost[r][c];
                        pairs.push((r, c));
                    },
                );
                assert_eq!(pairs.len(), rows.min(cols), "{rows}x{cols}");
                let want = if rows <= cols {
                    brute_force(&cost)
                } else {
                    let t: Vec<Vec<f32>> = (0..cols)
                        .map(|c| (0..rows).map(|r| cost[r][c]).collect())
                        .collect();
                    brute_force(&t)
                };
                assert!(
                    (total - want).abs() < 1e-4,
                    "{rows}x{cols}: {total} vs {want}"
                );
            }
        }
    }

    #[test]
    fn pairs_above_the_gate_are_left_out() {
        let cost = [[0.1, 0.9], [0.95, 0.99]];
        let mut pairs = Vec::new();
        Assigner::default().solve(2, 2, |r, c| cost[r][c], 0.5, |r, c| pairs.push((r, c)));
        assert_eq!(pairs, [(0, 0)]);
    }
}
