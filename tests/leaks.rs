//! Resource checks that count this process's descriptors and children,
//! so they live alone in their own test binary.

mod common;

use common::*;

#[test]
fn many_launch_cycles_leak_no_fds_or_children() {
    // Warm up lazily created state (the spawner thread, the first reaper).
    launched(&[]).shutdown(false, secs(30.0)).unwrap();
    let fds = open_fds();
    for _ in 0..200 {
        let mut vm = launched(&[]);
        vm.shutdown(false, secs(30.0)).unwrap();
    }
    // Reaper threads exit right after the reap, closing what they hold;
    // on a loaded machine the last one can take a while to be scheduled.
    let settled = std::time::Instant::now() + secs(10.0);
    while open_fds() != fds && std::time::Instant::now() < settled {
        std::thread::sleep(secs(0.05));
    }
    assert_eq!(open_fds(), fds);
    assert!(children().is_empty(), "children left: {:?}", children());
}
