//go:build !linux

package unpack

func swap(staging, dest string) error { return swapAside(staging, dest) }
