//! Small statistics the reports share.

/// The middle value of `v` (sorted in place), the mean of the two middle
/// ones for an even count; NaN for none.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Rounds of a comparison: each between two ways of running the same work
/// (1 thread and 2, one server and another), measured in rounds of one
/// window of each, the order swapping from round to round ([`base_first`]).
/// On a shared machine a slow spell lands in one window; a single window
/// of each then reports it as the ratio, where the median of the rounds'
/// own ratios leaves a minority of slow rounds out.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rounds {
    /// Each round's rate of the base (the ratio's denominator), in order.
    pub(crate) base: Vec<f64>,
    /// Each round's rate of the other, in round order.
    pub(crate) other: Vec<f64>,
}

impl Rounds {
    /// Each round's other rate over its base rate.
    pub(crate) fn ratios(&self) -> Vec<f64> {
        self.base
            .iter()
            .zip(&self.other)
            .map(|(a, b)| b / a)
            .collect()
    }

    /// The median of the rounds' ratios: the figure a goal reads.
    pub(crate) fn ratio(&self) -> f64 {
        median(&mut self.ratios())
    }

    /// The median rate of the base and of the other.
    pub(crate) fn rates(&self) -> [f64; 2] {
        [
            median(&mut self.base.clone()),
            median(&mut self.other.clone()),
        ]
    }

    /// The rounds' ratios, for a report: `1.71x, 1.80x, ...`.
    pub(crate) fn rounds_text(&self) -> String {
        let r: Vec<String> = self.ratios().iter().map(|r| format!("{r:.2}x")).collect();
        r.join(", ")
    }
}

/// Whether round `round` runs the base first: even rounds do, odd ones run
/// the other first, so over an even number of rounds each order comes up
/// as often.
pub(crate) fn base_first(round: usize) -> bool {
    round.is_multiple_of(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The goal reads the median of each round's own ratio, not the ratio
    /// of the median rates (here 1.805x against 1.79x): a round is one
    /// moment of the machine, and its two windows are read together.
    #[test]
    fn rounds_take_the_median_of_their_own_ratios() {
        let s = Rounds {
            base: vec![100.0, 100.0, 100.0, 80.0, 100.0, 100.0],
            other: vec![180.0, 182.0, 130.0, 160.0, 178.0, 181.0],
        };
        assert_eq!(s.ratios(), vec![1.8, 1.82, 1.3, 2.0, 1.78, 1.81]);
        // Sorted: 1.3, 1.78, 1.8, 1.81, 1.82, 2.0: the middle two's mean.
        assert!((s.ratio() - 1.805).abs() < 1e-9, "{}", s.ratio());
        assert_eq!(s.rates(), [100.0, 179.0]);
        let of_medians = s.rates()[1] / s.rates()[0];
        assert!((of_medians - 1.79).abs() < 1e-9, "{of_medians}");
        assert_eq!(s.rounds_text(), "1.80x, 1.82x, 1.30x, 2.00x, 1.78x, 1.81x");
    }

    #[test]
    fn rounds_alternate_which_runs_first() {
        let firsts: Vec<bool> = (0..6).map(base_first).collect();
        assert_eq!(firsts, [true, false, true, false, true, false]);
    }

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
