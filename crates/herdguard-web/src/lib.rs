//! The web assets herdguard's live pages share: the admin dashboard of
//! `herdguard serve` and the web demonstrator of `herdguard demo --web`.
//!
//! Both pages are plain HTML that load these two files from their own server
//! and get their figures over server-sent events; nothing is fetched from
//! anywhere else, so they work offline.
//!
//! ```
//! assert!(herdguard_web::CHART_JS.contains("HG.chart"));
//! assert!(herdguard_web::STYLE_CSS.contains("body"));
//! ```
//!
//! # Layout
//!
//! - `chart.js`: `HG.chart(canvas, series)` — a scrolling time-series line
//!   chart on a canvas (one line per series, auto-scaled, a legend), and small
//!   helpers (`HG.fmt`, `HG.el`).
//! - `style.css`: the pages' look.

#![warn(missing_docs)]

/// The chart script (`/assets/chart.js` on both pages).
pub const CHART_JS: &str = include_str!("chart.js");

/// The style sheet (`/assets/style.css` on both pages).
pub const STYLE_CSS: &str = include_str!("style.css");

/// `Content-Type` of [`CHART_JS`].
pub const JS_TYPE: &str = "text/javascript; charset=utf-8";
/// `Content-Type` of [`STYLE_CSS`].
pub const CSS_TYPE: &str = "text/css; charset=utf-8";
/// `Content-Type` of the pages.
pub const HTML_TYPE: &str = "text/html; charset=utf-8";
