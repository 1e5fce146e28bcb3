//! Pure request routing: the path normalised, the longest matching route, routes by model,
//! and the `model` a request names (JSON body, multipart form or path). No I/O here.

pub(crate) mod model;
pub(crate) mod routes;
