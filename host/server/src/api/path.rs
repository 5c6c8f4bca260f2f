//! The URL path of a request, percent-decoded only when it has to be.

/// A request's URL path, percent-decoded. Kept as the URI's own bytes when
/// it has nothing to decode (nearly always), so most requests copy no path.
pub(super) enum RequestPath {
    Raw(http::uri::PathAndQuery),
    /// The decoded path, and the URI's bytes for the query.
    Decoded {
        path: String,
        raw: http::uri::PathAndQuery,
    },
}

impl RequestPath {
    pub(super) fn new(uri: http::Uri) -> RequestPath {
        let raw = uri.into_parts().path_and_query.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        if !raw.path().contains('%') {
            return RequestPath::Raw(raw);
        }
        // A path that is not UTF-8 once decoded is taken as sent, as before.
        match percent_encoding::percent_decode_str(raw.path()).decode_utf8() {
            Ok(std::borrow::Cow::Owned(path)) => RequestPath::Decoded { path, raw },
            Ok(std::borrow::Cow::Borrowed(_)) | Err(_) => RequestPath::Raw(raw),
        }
    }

    /// The query, as sent (not decoded).
    pub(super) fn query(&self) -> Option<&str> {
        match self {
            RequestPath::Raw(raw) | RequestPath::Decoded { raw, .. } => raw.query(),
        }
    }
}

impl std::ops::Deref for RequestPath {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            RequestPath::Raw(raw) => raw.path(),
            RequestPath::Decoded { path, .. } => path,
        }
    }
}
