"""The package version, in a module of its own so any layer may import it without importing the
package root (whose API reaches the top layers)."""

__version__ = "0.1.0"
