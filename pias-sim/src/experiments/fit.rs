//! Least-squares fits of a few growth laws, to extrapolate measured curves to 10^5 proxies.

/// A growth law y(n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// y = a
    Constant,
    /// y = a + b·ln n
    Log,
    /// y = a + b·n
    Linear,
    /// y = a·n^b
    Power,
}

impl Model {
    pub const ALL: [Model; 4] = [Model::Constant, Model::Log, Model::Linear, Model::Power];

    pub fn name(self) -> &'static str {
        match self {
            Model::Constant => "a",
            Model::Log => "a + b·ln n",
            Model::Linear => "a + b·n",
            Model::Power => "a·n^b",
        }
    }

    fn params(self) -> usize {
        if self == Model::Constant { 1 } else { 2 }
    }
}

/// A fitted law with its residual error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub model: Model,
    pub a: f64,
    pub b: f64,
    /// Root-mean-square residual in y.
    pub rmse: f64,
    /// Corrected Akaike information criterion (lower is better; penalises the extra parameter).
    pub aicc: f64,
}

impl Fit {
    pub fn eval(&self, n: f64) -> f64 {
        match self.model {
            Model::Constant => self.a,
            Model::Log => self.a + self.b * n.ln(),
            Model::Linear => self.a + self.b * n,
            Model::Power => self.a * n.powf(self.b),
        }
    }

    /// The law with its parameters, e.g. `y = 3.1 + 0.52·ln n`.
    pub fn describe(&self) -> String {
        match self.model {
            Model::Constant => format!("y = {:.4}", self.a),
            Model::Log => format!("y = {:.4} + {:.4}·ln n", self.a, self.b),
            Model::Linear => format!("y = {:.4} + {:.3e}·n", self.a, self.b),
            Model::Power => format!("y = {:.4}·n^{:.4}", self.a, self.b),
        }
    }
}

/// Ordinary least squares of y = a + b·x.
fn ols(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}

/// Fits `model` to points (n, y). The power law is fitted in log-log space (y > 0 required).
pub fn fit(model: Model, pts: &[(f64, f64)]) -> Option<Fit> {
    let pts: Vec<(f64, f64)> = pts
        .iter()
        .copied()
        .filter(|p| p.0 > 0.0 && p.1.is_finite())
        .collect();
    if pts.len() < model.params() {
        return None;
    }
    let xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
    let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let (a, b) = match model {
        Model::Constant => (ys.iter().sum::<f64>() / ys.len() as f64, 0.0),
        Model::Log => ols(&xs.iter().map(|x| x.ln()).collect::<Vec<_>>(), &ys),
        Model::Linear => ols(&xs, &ys),
        Model::Power => {
            if ys.iter().any(|y| *y <= 0.0) {
                return None;
            }
            let (la, b) = ols(
                &xs.iter().map(|x| x.ln()).collect::<Vec<_>>(),
                &ys.iter().map(|y| y.ln()).collect::<Vec<_>>(),
            );
            (la.exp(), b)
        }
    };
    let mut f = Fit {
        model,
        a,
        b,
        rmse: 0.0,
        aicc: 0.0,
    };
    let n = pts.len() as f64;
    let rss: f64 = pts.iter().map(|(x, y)| (y - f.eval(*x)).powi(2)).sum();
    f.rmse = (rss / n).sqrt();
    let k = model.params() as f64 + 1.0;
    let rss = rss.max(1e-12 * ys.iter().map(|y| y * y).sum::<f64>().max(1e-300));
    f.aicc = n * (rss / n).ln()
        + 2.0 * k
        + if n - k - 1.0 > 0.0 {
            2.0 * k * (k + 1.0) / (n - k - 1.0)
        } else {
            0.0
        };
    Some(f)
}

/// Every model's fit, best (lowest AICc) first.
pub fn fit_all(pts: &[(f64, f64)]) -> Vec<Fit> {
    let mut v: Vec<Fit> = Model::ALL.iter().filter_map(|m| fit(*m, pts)).collect();
    v.sort_by(|a, b| a.aicc.total_cmp(&b.aicc));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        [100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0]
            .iter()
            .map(|&n| (n, f(n)))
            .collect()
    }

    #[test]
    fn recovers_known_parameters() {
        let f = fit(Model::Power, &pts(|n| 3.0 * n.powf(0.5))).unwrap();
        assert!((f.a - 3.0).abs() < 1e-9 && (f.b - 0.5).abs() < 1e-9, "{f:?}");
        let f = fit(Model::Log, &pts(|n| 2.0 + 0.7 * n.ln())).unwrap();
        assert!((f.a - 2.0).abs() < 1e-9 && (f.b - 0.7).abs() < 1e-9, "{f:?}");
        let f = fit(Model::Linear, &pts(|n| 1.5 + 0.01 * n)).unwrap();
        assert!((f.a - 1.5).abs() < 1e-9 && (f.b - 0.01).abs() < 1e-12, "{f:?}");
        let f = fit(Model::Constant, &pts(|_| 4.0)).unwrap();
        assert_eq!(f.a, 4.0);
    }

    #[test]
    fn picks_the_generating_law() {
        // A little deterministic noise so the comparison is not between exact zeros.
        let noise = |n: f64| 1.0 + 0.002 * ((n * 7.3).sin());
        assert_eq!(
            fit_all(&pts(|n| 2.0 + 0.7 * n.ln() * noise(n)))[0].model,
            Model::Log
        );
        assert_eq!(
            fit_all(&pts(|n| 3.0 * n.powf(0.8) * noise(n)))[0].model,
            Model::Power
        );
        assert_eq!(fit_all(&pts(|n| 5.0 * noise(n)))[0].model, Model::Constant);
    }
}
