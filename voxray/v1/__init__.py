"""Generated from protos/voxray/v1 by voxray.protogen."""
