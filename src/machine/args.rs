//! QEMU's command line, built from small pure functions, one per piece
//! (the display, the monitor, the console, qtest, …), each testable alone;
//! [`super::launch`] puts them together in the order `QEMUMachine` uses.

use std::os::fd::RawFd;
use std::path::Path;

use super::{AddFd, ConsoleConfig};

/// The command line: the pieces in order.
pub(super) fn command_line(pieces: &[Vec<String>]) -> Vec<String> {
    pieces.concat()
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// No display and no VGA, as `QEMUMachine` starts every machine.
pub(super) fn display_args() -> Vec<String> {
    strings(&["-display", "none", "-vga", "none"])
}

/// Where the monitor's chardev is.
pub(super) enum MonitorChardev<'a> {
    /// A descriptor QEMU inherits.
    Fd(RawFd),
    /// A unix socket QEMU connects to.
    Unix(&'a Path),
    /// A TCP address QEMU connects to.
    Tcp(&'a str, u16),
}

impl MonitorChardev<'_> {
    /// The `-chardev` specification, with the id the `-mon` option names.
    pub(super) fn spec(&self) -> String {
        match self {
            MonitorChardev::Fd(fd) => format!("socket,id=mon,fd={fd}"),
            MonitorChardev::Unix(path) => format!(
                "socket,id=mon,path={}",
                option_value(&path.display().to_string())
            ),
            MonitorChardev::Tcp(host, port) => format!("socket,id=mon,host={host},port={port}"),
        }
    }
}

/// A QMP monitor on the chardev `spec`.
pub(super) fn monitor_args(spec: &str) -> Vec<String> {
    strings(&["-chardev", spec, "-mon", "chardev=mon,mode=control"])
}

/// `-monitor null` when asked for (`add_monitor_null`).
pub(super) fn monitor_null_args(enabled: bool) -> Vec<String> {
    if enabled {
        strings(&["-monitor", "null"])
    } else {
        Vec::new()
    }
}

/// The `-machine` type, when one was set.
pub(super) fn machine_args(machine_type: Option<&str>) -> Vec<String> {
    machine_type.map_or_else(Vec::new, |m| strings(&["-machine", m]))
}

/// One `-add-fd`.
pub(super) fn add_fd_args(f: &AddFd) -> Vec<String> {
    let mut spec = format!(
        "fd={},set={},opaque={}",
        f.fd,
        f.fdset,
        option_value(&f.opaque)
    );
    if !f.opts.is_empty() {
        spec.push(',');
        spec.push_str(&f.opts);
    }
    vec!["-add-fd".into(), spec]
}

/// `-serial null` for each serial port before the console's.
pub(super) fn serial_padding_args(console_index: u32) -> Vec<String> {
    (0..console_index)
        .flat_map(|_| strings(&["-serial", "null"]))
        .collect()
}

/// The console chardev on `fd`, on a serial port or on a device.
pub(super) fn console_args(fd: RawFd, console: &ConsoleConfig) -> Vec<String> {
    let mut a = vec!["-chardev".into(), format!("socket,id=console,fd={fd}")];
    match &console.device_type {
        None => a.extend(strings(&["-serial", "chardev:console"])),
        Some(t) => a.extend(["-device".into(), format!("{t},chardev=console")]),
    }
    a
}

/// The guest agent's virtio-serial port on the socket `fd`.
pub(super) fn agent_args(fd: RawFd) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,id=vmscript-agent,fd={fd}"),
        "-device".into(),
        "virtio-serial-pci,id=vmscript-agent-bus".into(),
        "-device".into(),
        format!(
            "virtserialport,bus=vmscript-agent-bus.0,chardev=vmscript-agent,name={}",
            super::agent::PORT_NAME
        ),
    ]
}

/// qtest on the unix socket `path`.
///
/// `-qtest` selects the qtest accelerator where QEMU has it; Debian's 7.2
/// lacks it and runs the firmware under TCG instead, racing qtest's port
/// I/O. `-S` keeps guest code from ever running, which is what qtest means.
/// A second QMP monitor, listening on `path` for a client of its own
/// (`vmscript qmp` from another terminal) beside the machine's.
pub(super) fn second_qmp_args(path: &Path) -> Vec<String> {
    vec![
        "-qmp".into(),
        format!(
            "unix:{},server=on,wait=off",
            option_value(&path.display().to_string())
        ),
    ]
}

pub(super) fn qtest_args(path: &Path) -> Vec<String> {
    vec![
        "-qtest".into(),
        format!("unix:{}", option_value(&path.display().to_string())),
        "-qtest-log".into(),
        "/dev/null".into(),
        "-S".into(),
    ]
}

/// `-incoming defer`: wait for `migrate-incoming` instead of booting.
pub(super) fn incoming_args(incoming: bool) -> Vec<String> {
    if incoming {
        strings(&["-incoming", "defer"])
    } else {
        Vec::new()
    }
}

/// `text` as the value of a QEMU option (`path=…` in `-chardev socket,…`):
/// QEMU reads a `,` as the end of the value, and `,,` as a comma in it.
fn option_value(text: &str) -> String {
    text.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_machine_starts_without_display_or_vga() {
        assert_eq!(display_args(), ["-display", "none", "-vga", "none"]);
    }

    #[test]
    fn the_monitor_chardev_names_an_inherited_fd_a_path_or_an_address() {
        assert_eq!(MonitorChardev::Fd(7).spec(), "socket,id=mon,fd=7");
        assert_eq!(
            MonitorChardev::Unix(Path::new("/tmp/a,b/qmp.sock")).spec(),
            "socket,id=mon,path=/tmp/a,,b/qmp.sock"
        );
        assert_eq!(
            MonitorChardev::Tcp("127.0.0.1", 4444).spec(),
            "socket,id=mon,host=127.0.0.1,port=4444"
        );
    }

    #[test]
    fn the_monitor_is_a_qmp_monitor_on_its_chardev() {
        assert_eq!(
            monitor_args("socket,id=mon,fd=7"),
            [
                "-chardev",
                "socket,id=mon,fd=7",
                "-mon",
                "chardev=mon,mode=control"
            ]
        );
    }

    #[test]
    fn optional_pieces_are_empty_when_not_asked_for() {
        assert!(monitor_null_args(false).is_empty());
        assert_eq!(monitor_null_args(true), ["-monitor", "null"]);
        assert!(machine_args(None).is_empty());
        assert_eq!(machine_args(Some("q35")), ["-machine", "q35"]);
        assert!(serial_padding_args(0).is_empty());
    }

    #[test]
    fn add_fd_escapes_the_opaque_value_and_appends_options() {
        let f = AddFd {
            fd: 9,
            fdset: 2,
            opaque: "disk,a".into(),
            opts: String::new(),
        };
        assert_eq!(add_fd_args(&f), ["-add-fd", "fd=9,set=2,opaque=disk,,a"]);
        let f = AddFd {
            opts: "extra=1".into(),
            ..f
        };
        assert_eq!(
            add_fd_args(&f),
            ["-add-fd", "fd=9,set=2,opaque=disk,,a,extra=1"]
        );
    }

    #[test]
    fn a_console_index_pads_the_serial_ports_before_it() {
        assert_eq!(
            serial_padding_args(2),
            ["-serial", "null", "-serial", "null"]
        );
    }

    #[test]
    fn the_console_goes_on_a_serial_port_or_on_a_device() {
        let serial = ConsoleConfig {
            enabled: true,
            device_type: None,
            index: 0,
        };
        assert_eq!(
            console_args(5, &serial),
            [
                "-chardev",
                "socket,id=console,fd=5",
                "-serial",
                "chardev:console"
            ]
        );
        let device = ConsoleConfig {
            device_type: Some("virtconsole".into()),
            ..serial
        };
        assert_eq!(
            console_args(5, &device),
            [
                "-chardev",
                "socket,id=console,fd=5",
                "-device",
                "virtconsole,chardev=console"
            ]
        );
    }

    #[test]
    fn a_second_monitor_listens_on_an_escaped_path_without_waiting() {
        assert_eq!(
            second_qmp_args(Path::new("/s,d/vm0.qmp.sock")),
            ["-qmp", "unix:/s,,d/vm0.qmp.sock,server=on,wait=off"]
        );
    }

    #[test]
    fn qtest_listens_on_an_escaped_path_and_keeps_the_guest_stopped() {
        assert_eq!(
            qtest_args(Path::new("/s,d/vm.qtest.sock")),
            [
                "-qtest",
                "unix:/s,,d/vm.qtest.sock",
                "-qtest-log",
                "/dev/null",
                "-S"
            ]
        );
    }

    #[test]
    fn the_command_line_keeps_its_pieces_in_order() {
        let line = command_line(&[
            strings(&["valgrind"]),
            strings(&["qemu"]),
            display_args(),
            Vec::new(),
            strings(&["-M", "none"]),
        ]);
        assert_eq!(
            line,
            ["valgrind", "qemu", "-display", "none", "-vga", "none", "-M", "none"]
        );
    }
}
