#!/bin/sh
# Runs every minute: how full is the disk that holds this folder?
df -h . | tail -n 1
