//go:build !unix

package testenv

import "os/exec"

func setProcessGroup(*exec.Cmd) {}

// signalGroup kills the process: without process groups and SIGTERM there
// is no graceful stop.
func signalGroup(cmd *exec.Cmd, _ bool) { _ = cmd.Process.Kill() }
