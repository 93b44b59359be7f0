//! Interactive front ends: the QMP shell (`vmscript qmp`).

pub mod qmp_shell;
