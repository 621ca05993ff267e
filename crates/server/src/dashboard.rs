//! The dashboard at `/`: one static page (HTML, CSS and vanilla JavaScript,
//! no framework, no build step) compiled into the binary with
//! `include_str!`, so `fleetscore serve` needs no files beside it and the
//! page works offline (nothing is loaded from a CDN).
//!
//! The page is only a reader of the JSON API under `/v1` (overview, extent,
//! jobs, slowest tasks, readings, predictions, models); all it shows comes
//! from there. Its parts:
//! - time range: from/to (UTC, whole hours), earlier/later by the range's
//!   length, a length (6 h to the 31 days one query reads at most; a longer
//!   range is cut, saying so), "Newest" (the default: the newest scored
//!   data, followed as it moves) and "Jump to data" (`GET /v1/extent`: the
//!   first and last hours holding predictions and readings). When the
//!   default range holds nothing scored but predictions exist elsewhere,
//!   the page moves to the newest of them by itself and says so; a pinned
//!   range that holds nothing says where the data is and offers the jump.
//!   A pinned range is in the URL: `/#from=T&to=T` (RFC 3339);
//! - fleet overview: anomalies per hour per device as a heat map (inline
//!   SVG), most anomalies first (or by name), the fleet's row with each
//!   hour's count and the total, a tooltip per cell; a device opens its
//!   drill-down;
//! - job timeline: recent jobs as bars from start to finish on a wall-clock
//!   axis, coloured by state, failed models marked; a job opens its tasks and
//!   failures, and can show its window in the overview;
//! - the slowest tasks, in two tables: those that read the data (map tasks)
//!   and those that score it;
//! - per-device drill-down: each tag's readings as a line chart with the
//!   anomalies marked; linkable as `/#device=NAME` (with a range:
//!   `/#from=T&to=T&device=NAME`).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// `GET /` and its assets under `/ui/`; merge into the service's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    // no-cache: a browser revalidates, so an upgraded binary's page is seen
    // at once.
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page must work offline: no script, style, font or image from
    /// another host.
    #[test]
    fn the_page_loads_nothing_from_another_host() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            for pat in ["http://", "https://", "//cdn", "@import"] {
                // The SVG namespace is a name, not a request.
                let hits = text
                    .match_indices(pat)
                    .filter(|(i, _)| !text[*i..].starts_with("http://www.w3.org/2000/svg"))
                    .count();
                assert_eq!(hits, 0, "{name} contains {pat:?}");
            }
        }
        assert!(INDEX_HTML.contains("/ui/app.js") && INDEX_HTML.contains("/ui/app.css"));
    }
}
