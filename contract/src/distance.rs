//! How two embeddings are compared, in training-time evaluation and in the served index.

use serde::{Deserialize, Serialize};

/// How embeddings are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// Euclidean (L2) distance on the raw embeddings; the STML reference's choice.
    /// Rankings use the squared distance, which orders the same.
    #[default]
    Euclidean,
    /// Cosine distance `1 - cos(a, b)`: Euclidean on L2-normalised embeddings, halved.
    Cosine,
}

impl Distance {
    /// The name used in manifests, settings and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Euclidean => "euclidean",
            Self::Cosine => "cosine",
        }
    }
}

impl std::fmt::Display for Distance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Distance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "euclidean" | "l2" => Ok(Self::Euclidean),
            "cosine" => Ok(Self::Cosine),
            _ => Err(format!("unknown distance `{s}`; expected `euclidean` or `cosine`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in [Distance::Euclidean, Distance::Cosine] {
            assert_eq!(d.as_str().parse::<Distance>(), Ok(d));
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
        }
        assert_eq!("l2".parse::<Distance>(), Ok(Distance::Euclidean));
        assert!("dot".parse::<Distance>().is_err());
    }
}
