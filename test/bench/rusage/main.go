// Command rusage runs the command given as its arguments, with the same
// standard streams, and writes the command's peak RSS in bytes, then its
// wall time and CPU time (user + system) in nanoseconds, to file
// descriptor 3. It exits as the command did.
//
// The benchmark cannot read a tool's peak RSS from its own wait4: Go starts
// a child with vfork, so until exec the child runs in the parent's address
// space, and Linux carries that address space's high-water mark into the
// child's ru_maxrss at exec (exec_mmap → setmax_mm_hiwater_rss). Every tool
// would then weigh at least as much as the benchmark with its in-process
// registry (~50 MiB). Started from this small program instead, a tool
// inherits only its few MiB.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rusage COMMAND [ARG...] 3>REPORT")
		os.Exit(2)
	}
	report := os.NewFile(3, "report")
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		fmt.Fprintln(os.Stderr, "rusage:", err)
		os.Exit(127)
	}
	ps := cmd.ProcessState
	fmt.Fprintf(report, "%d %d %d\n", maxRSS(ps), wall.Nanoseconds(), (ps.UserTime() + ps.SystemTime()).Nanoseconds())
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		os.Exit(128 + int(ws.Signal()))
	}
	os.Exit(cmd.ProcessState.ExitCode())
}
