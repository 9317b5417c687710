package netns

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread that has entered the named network namespace
// (one made by `ip netns add`, under /var/run/netns); "" means the caller's
// own. Sockets and TUN devices fn opens stay in that namespace after fn
// returns, whichever thread later uses them. The thread is discarded
// afterwards rather than returned to the scheduler in a foreign namespace.
func Do(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open("/var/run/netns/" + name)
		if err != nil {
			errc <- fmt.Errorf("network namespace %s: %w", name, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// OpenTUN creates the TUN device ifname (IFF_TUN, no packet information:
// each read and write is one IP packet) in network namespace ns ("" for the
// caller's). The device lives as long as the returned file is open, so a
// killed test leaves none behind; its addresses and routes go with it.
func OpenTUN(ns, ifname string) (*os.File, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("TUN device name %q: at most %d characters", ifname, unix.IFNAMSIZ-1)
	}
	var file *os.File
	err := Do(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		var req [unix.IFNAMSIZ + 64]byte
		copy(req[:], ifname)
		*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TUN | unix.IFF_NO_PI
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
			unix.Close(fd)
			return fmt.Errorf("create TUN device %s: %w", ifname, errno)
		}
		// Non-blocking, so that the runtime's poller serves reads and Close
		// interrupts them.
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return err
		}
		file = os.NewFile(uintptr(fd), "tun:"+ifname)
		return nil
	})
	return file, err
}
