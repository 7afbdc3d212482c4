//! The ccm domain model.
#![warn(missing_docs)]
