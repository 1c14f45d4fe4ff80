{"purpose": "ehrport/export-manifest/v1", "keyId": 123456789, "signature": "AQdbzRUAAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/"}
