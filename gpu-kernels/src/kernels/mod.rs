//! The kernels. Each module is one op; its kernel names are `<op>_<variant>` and the host launcher in
//! `host/src/ops/<op>.rs` has the same name.
mod elementwise;
