// logs
