//! Pure request routing: the path normalised, the longest matching route, routes by model,
//! the `model` a request names (JSON body, multipart form or path), and the client API a
//! request is of. No I/O here.

pub(crate) mod api;
pub(crate) mod model;
pub(crate) mod routes;
