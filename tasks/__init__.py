"""Step functions that workflows call as ``uses: task:<module>.<function>``."""
