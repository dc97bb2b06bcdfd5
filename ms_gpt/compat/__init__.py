"""Shims for third-party libraries whose released versions do not run as-is on MindSpore 2.7.

Nothing is imported here on purpose: `ms_gpt.compat.mindnlp` imports mindnlp (several seconds) only when one of
its accessors is called.

Must not import: any ms_gpt module.
"""
